"""The semantic cache: guards, verifier, decision rule, index and Redis-backed cache."""
