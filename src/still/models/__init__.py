"""Models: one Provider interface for everything that answers chat requests.

`get_model("local:smollm2-135m-instruct")` gives a bundled model; a Hugging Face model
directory, a distilled student and the offline `scripted:` provider work the same way.
"""

from still.models._bundled import BUNDLED, BundledModel, bundled_path, is_installed
from still.models._openai import use_key_variables
from still.models._provider import (
    Provider,
    get_model,
    known_models,
    register_provider,
    schemes,
)

__all__ = [
    "BUNDLED",
    "BundledModel",
    "Provider",
    "bundled_path",
    "get_model",
    "is_installed",
    "known_models",
    "register_provider",
    "schemes",
    "use_key_variables",
]
