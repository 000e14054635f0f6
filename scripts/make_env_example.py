"""Write config/rag.env.example: every RAG_* setting at its default, with its meaning, from
rag/config/settings.toml (``rag.settings.env_example``).

Usage: python scripts/make_env_example.py
"""

from pathlib import Path

from rag.settings import env_example

TARGET = Path(__file__).resolve().parent.parent / "config" / "rag.env.example"

if __name__ == "__main__":
    TARGET.write_text(env_example())
    print(f"wrote {TARGET}")
