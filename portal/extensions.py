"""Flask extensions, created unbound; ``create_app`` binds them to an application."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

from portal.core import signals
from portal.core.models import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()


def _limit_breached(limit: Any) -> None:
    """Every limit's breach (the answer stays Flask-Limiter's 429): tell whoever counts them."""
    signals.emit(signals.rate_limited, endpoint=request.endpoint, limit=str(limit.limit))


limiter = Limiter(key_func=get_remote_address, on_breach=_limit_breached)
