"""The subscriber-facing web pages (`digest serve`): subscribe, confirm, preferences, unsubscribe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from digest.web.app import create_app, create_app_from_environment

__all__ = ["create_app", "create_app_from_environment"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `digest send` and `digest staff` import modules of this package
    # (the staff store's tables) and must not pay for Flask and every view to do it.
    if name in __all__:
        from digest.web import app

        return getattr(app, name)
    raise AttributeError(f"module 'digest.web' has no attribute {name!r}")
