"""The review inbox (`/review`): a web page where people label the queries the model is unsure
about. Server-rendered with Jinja2; its own small script and stylesheet, no build step."""

from router.web.inbox import install_review_inbox

__all__ = ["install_review_inbox"]
