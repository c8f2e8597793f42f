"""The local web page: ``studio`` (model + inversion cache over ``engine``), ``form`` (widgets -> settings),
``page`` (the Gradio layout), ``serve`` (``vidinvert serve``). Gradio is imported only when the page is built."""

from .form import form_defaults, parse_prompts, settings_from_form
from .studio import EditResult, Studio, file_hash

__all__ = ["EditResult", "Studio", "file_hash", "form_defaults", "parse_prompts", "settings_from_form"]
