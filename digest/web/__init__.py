"""The subscriber-facing web pages (`digest serve`): subscribe, confirm, preferences, unsubscribe."""

from digest.web.app import create_app, create_app_from_environment

__all__ = ["create_app", "create_app_from_environment"]
