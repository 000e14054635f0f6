"""One ``APIRouter`` per resource; ``services.app`` includes every router in ``ROUTERS``."""

from services.api.routes.ask import router as ask_router
from services.api.routes.cache import router as cache_router
from services.api.routes.documents import router as documents_router
from services.api.routes.feedback import router as feedback_router
from services.api.routes.ops import router as ops_router
from services.api.routes.sessions import router as sessions_router

ROUTERS = (ask_router, feedback_router, sessions_router, documents_router, cache_router, ops_router)

__all__ = ["ROUTERS"]
