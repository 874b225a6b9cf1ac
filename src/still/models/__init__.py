"""Models: one Provider interface for everything that answers chat requests.

`get_model("local:smollm2-135m-instruct")` gives a bundled model; a Hugging Face model
directory, a distilled student and the offline `scripted:` provider work the same way;
`vllm:` runs the same models (or a hub id) on an in-process vLLM engine, and `vllm_server`
starts vLLM's own server on one (`still serve --engine vllm`).
Chat-template helpers (`render_prompt`, `prompt_token_ids`, `answer_token_ids`) are the
local provider's exact prompt, shared with the trainers and token counters so that a
student is trained on the prompt it is later asked. Nothing here imports torch.
"""

from still.models._bundled import (
    BUNDLED,
    BundledModel,
    bundled_path,
    dequantize_gguf,
    is_installed,
)
from still.models._chat import answer_token_ids, prompt_token_ids, render_prompt
from still.models._constrained import json_schema_processor
from still.models._local import PASS_TOKENS, LocalProvider, local_path, padded_passes
from still.models._openai import (
    EndpointAccess,
    endpoint_access,
    is_loopback,
    use_key_variables,
)
from still.models._provider import (
    Provider,
    get_model,
    isolate_failures,
    known_models,
    model_folder,
    register_provider,
    schemes,
)
from still.models._vllm import (
    EngineError,
    engine_options,
    gpus_per_engine,
    shutdown_engine,
    use_engine_options,
    vllm_model,
)
from still.models._vllm_serve import VLLMServe, serve_with_vllm, vllm_server

__all__ = [
    "BUNDLED",
    "BundledModel",
    "EndpointAccess",
    "EngineError",
    "LocalProvider",
    "PASS_TOKENS",
    "Provider",
    "VLLMServe",
    "answer_token_ids",
    "bundled_path",
    "dequantize_gguf",
    "endpoint_access",
    "engine_options",
    "get_model",
    "gpus_per_engine",
    "is_installed",
    "is_loopback",
    "isolate_failures",
    "json_schema_processor",
    "known_models",
    "local_path",
    "model_folder",
    "padded_passes",
    "prompt_token_ids",
    "register_provider",
    "render_prompt",
    "schemes",
    "serve_with_vllm",
    "shutdown_engine",
    "use_engine_options",
    "use_key_variables",
    "vllm_model",
    "vllm_server",
]
