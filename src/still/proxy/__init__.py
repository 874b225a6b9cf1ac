"""`still proxy`: record production traffic while forwarding it, unchanged, to its model.

An application that calls a large model changes only its base URL to put the proxy in
between: each chat completion goes to the upstream (`Upstream`: OpenAI, Azure, any
OpenAI-compatible URL, or a local model), the upstream's answer or error goes back
unchanged (streams chunk by chunk), and the exchange is recorded in the completion store as
`still store import` keeps stored completions (`source=proxy`), so a task with
`data.source: store:<db>` trains on it with no teacher call. Recording goes through a
journal and a background writer (`Recorder`) and never holds a request up. `create_app`
takes a `Router` that picks the upstream per request: `RouteTable` (`still proxy --route`)
sends each tag's calls to its student or its teacher as the shadow's evidence says.
"""

from still.proxy._app import ID_HEADER, Call, Router, create_app, forward
from still.proxy._main import ProxyError, proxy
from still.proxy._recorder import Exchange, Recorder, RecorderStats
from still.proxy._route import RouteTable
from still.proxy._stream import StreamAssembler
from still.proxy._upstream import LocalUpstream, Upstream, UpstreamError, open_upstream
from still.serve import TAGS_HEADER, parse_tags

__all__ = [
    "ID_HEADER",
    "TAGS_HEADER",
    "Call",
    "Exchange",
    "LocalUpstream",
    "ProxyError",
    "Recorder",
    "RecorderStats",
    "RouteTable",
    "Router",
    "StreamAssembler",
    "Upstream",
    "UpstreamError",
    "create_app",
    "forward",
    "open_upstream",
    "parse_tags",
    "proxy",
]
