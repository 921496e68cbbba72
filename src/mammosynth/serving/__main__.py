"""`mammosynth serve` / `python -m mammosynth.serving`: start the KServe model server.

Example:
    mammosynth serve --model runs/real/seed0/model --http_port 8080 --enable_grpc false
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from kserve import ModelServer
from kserve import model_server as kserve_server

from mammosynth.models.io import load_meta
from mammosynth.serving.inputs import Limits, PayloadTooLarge
from mammosynth.serving.limits import PayloadLimitMiddleware
from mammosynth.serving.model import (
    DEFAULT_NAME,
    MAX_INFERENCE_THREADS,
    SMALL_MODEL_PX,
    MammoModel,
    MetadataMiddleware,
    available_cpus,
    choose_threads,
    configure_tf_threads,
    resolve_model_dir,
)
from mammosynth.serving.v2json import V2JsonMiddleware

log = logging.getLogger("mammosynth.serving")


# The threading flags (dest, environment variable, help); 0 is the automatic choice (`choose_threads`).
THREAD_FLAGS = (
    (
        "tf_intra_op_threads",
        "MAMMOSYNTH_TF_INTRA_OP_THREADS",
        f"TensorFlow intra-op threads per forward pass (0: 1 for models up to {SMALL_MODEL_PX} px on CPU, "
        "else TF's default of one per core)",
    ),
    (
        "tf_inter_op_threads",
        "MAMMOSYNTH_TF_INTER_OP_THREADS",
        "TensorFlow inter-op threads (0: 1 with one intra-op thread, else TF's default)",
    ),
    (
        "inference_threads",
        "MAMMOSYNTH_INFERENCE_THREADS",
        f"forward passes run at once (0: one per core up to {MAX_INFERENCE_THREADS} with one intra-op "
        "thread, else 1)",
    ),
)


def _add_thread_flags(parser: argparse.ArgumentParser) -> None:
    for dest, env, text in THREAD_FLAGS:
        parser.add_argument(
            f"--{dest.replace('_', '-')}",
            f"--{dest}",
            dest=dest,
            type=int,
            default=int(os.environ.get(env, "0")),
            help=f"{text}; env {env}",
        )


def build_parser() -> argparse.ArgumentParser:
    """The server's parser: KServe's server flags (``--http_port``, ``--model_name``, ...) plus ours."""
    parser = argparse.ArgumentParser(
        prog="mammosynth serve",
        description="Serve a mammosynth classifier over KServe's v1 and v2 (Open Inference) protocols.",
        parents=[kserve_server.parser],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model",
        "--model_dir",
        "--model-dir",
        dest="model",
        required=True,
        help="model directory (local path or s3:// URI) written by training",
    )
    parser.add_argument(
        "--max-instances",
        "--max_instances",
        dest="max_instances",
        type=int,
        default=Limits.max_instances,
        help="most images accepted in one request",
    )
    parser.add_argument(
        "--max-payload-bytes",
        "--max_payload_bytes",
        dest="max_payload_bytes",
        type=int,
        default=Limits.max_payload_bytes,
        help="largest request body accepted (HTTP 413 above)",
    )
    parser.add_argument(
        "--max-batch-size",
        "--max_batch_size",
        dest="max_batch_size",
        type=int,
        default=32,
        help="most images run in one forward pass when batching concurrent requests",
    )
    parser.add_argument(
        "--batch-wait-ms",
        "--batch_wait_ms",
        dest="batch_wait_ms",
        type=float,
        default=2.0,
        help="how long to wait for more concurrent requests before running a batch",
    )
    _add_thread_flags(parser)
    parser.add_argument(
        "--host",
        default="0.0.0.0",
        help="address the HTTP server binds (0.0.0.0 in a pod; 127.0.0.1 for a local-only server)",
    )
    parser.set_defaults(model_name=DEFAULT_NAME)
    return parser


async def payload_too_large_handler(_, exc):
    """An image over the pixel budget: HTTP 413 with the readable message, logged as one line."""
    from fastapi.responses import JSONResponse

    log.warning("413: %s", exc.detail)
    return JSONResponse(status_code=413, content={"error": exc.detail})


async def invalid_input_handler(_, exc):
    """A bad request: HTTP 400 with the message, logged as one line (KServe logs a traceback)."""
    from fastapi.responses import JSONResponse

    log.warning("400: %s", exc)
    return JSONResponse(status_code=400, content={"error": str(exc)})


def _bind_rest_server_to(host: str) -> None:
    """Make KServe's RESTServer bind ``host`` (it hardcodes 0.0.0.0) and log 4xx as one line."""
    from kserve.errors import InvalidInput

    class HostRESTServer(kserve_server.RESTServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.config.host = host

        def _add_exception_handlers(self, app):
            super()._add_exception_handlers(app)
            app.add_exception_handler(InvalidInput, invalid_input_handler)
            app.add_exception_handler(PayloadTooLarge, payload_too_large_handler)

    kserve_server.RESTServer = HostRESTServer


def _threads(args, image_size: int) -> int:
    """Fix TF's thread pools (before TF runs anything) and return how many passes may run at once."""
    import tensorflow as tf

    gpu = bool(tf.config.list_physical_devices("GPU"))
    cpus = available_cpus()
    intra_op, workers = choose_threads(
        image_size, cpus, gpu, args.tf_intra_op_threads, args.inference_threads
    )
    configure_tf_threads(intra_op, args.tf_inter_op_threads or (1 if intra_op == 1 else 0))
    log.info(
        "%d-px model on %s: %s intra-op thread(s), %d forward pass(es) at once",
        image_size,
        "GPU" if gpu else f"{cpus} CPU core(s)",
        intra_op or "TF's default",
        workers,
    )
    return workers


def main(argv: list[str] | None = None) -> int:
    """Load the model and serve until interrupted.

    Returns:
        0 after a clean shutdown, 2 on bad arguments.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("max_instances", "max_payload_bytes", "max_batch_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.batch_wait_ms < 0:
        parser.error(f"--batch-wait-ms must be >= 0, got {args.batch_wait_ms}")
    if args.workers != 1:
        # Each uvicorn worker re-imports the app without our payload limit and loads its own model
        # copy; scale with replicas (InferenceService min/maxReplicas) instead.
        parser.error(f"--workers must be 1 for mammosynth serve, got {args.workers}; scale with replicas")
    for flag, _, _ in THREAD_FLAGS:
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}")
    local = resolve_model_dir(args.model)
    workers = _threads(args, int(load_meta(local)["image_size"]))
    limits = Limits(max_instances=args.max_instances, max_payload_bytes=args.max_payload_bytes)
    model = MammoModel(
        args.model_name,
        local,
        limits=limits,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.batch_wait_ms,
        inference_threads=workers,
    )
    model.load()
    # Starlette picks the most specific handler, so this wins over KServe's InvalidInput (400) one.
    kserve_server.app.add_exception_handler(PayloadTooLarge, payload_too_large_handler)
    # Starlette runs the last-added middleware first: the JSON fast path sees bodies already bounded.
    kserve_server.app.add_middleware(V2JsonMiddleware, model_name=args.model_name)
    kserve_server.app.add_middleware(PayloadLimitMiddleware, max_bytes=limits.max_payload_bytes)
    kserve_server.app.add_middleware(MetadataMiddleware, model=model)
    if model.warning:
        log.warning("%s: %s", args.model_name, model.warning)
    _bind_rest_server_to(args.host)
    server = ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
    )
    log.info(
        "serving %s on port %d (v1 /v1/models/%s:predict, v2 /v2/models/%s/infer)",
        args.model_name,
        args.http_port,
        args.model_name,
        args.model_name,
    )
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
