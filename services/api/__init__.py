"""The HTTP API: dependencies (``deps``), error mapping (``errors``) and one ``APIRouter`` per
resource under ``routes``; ``services.app`` assembles them."""
