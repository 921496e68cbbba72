"""`MammoModel`: the KServe model that serves a mammosynth classifier (v1 and v2 protocols).

A request is decoded (base64 PNG/JPEG/DICOM or a pre-processed tensor) with the training
preprocessing, queued into a micro-batcher, and answered with the probability of malignancy, the
label at the model's threshold and the model version.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from mammosynth.serving import SERVED_MODEL_NAME
from mammosynth.serving.batcher import MicroBatcher
from mammosynth.serving.inputs import Limits, v1_instances, v2_inputs

log = logging.getLogger(__name__)

DEFAULT_NAME = SERVED_MODEL_NAME  # one name locally and in the cluster
UNKNOWN = "unknown"
PHANTOM_WARNING = (
    "this model was trained on phantom (embedded synthetic-looking) data, not on real mammograms; "
    "its probabilities say nothing about real images and must not inform any decision"
)
# v2 FP32 inputs up to this many values (16 images at 64², 1 at 256²) are checked on the event loop.
INLINE_ELEMENTS = 1 << 16


def _elements(shape) -> int:
    try:
        return math.prod(int(d) for d in shape or [0])
    except (TypeError, ValueError):
        return INLINE_ELEMENTS + 1  # malformed: let the threaded path raise the clear error


# Models up to this many parameters are served by a frozen-graph callable (`frozen_callable`). Freezing
# copies the weights several times over while it converts (peak RSS measured at ~20x the weights:
# +92 MB for the 1.1M-parameter simple CNN, +1 GB for VGG16, +4 GB and 19 s for InceptionResNetV2),
# and only a short pass gains from a cheaper call; bigger models keep the traced function, whose
# ~0.2 ms per call is nothing beside their pass.
FREEZE_MAX_PARAMS = 2_000_000


def frozen_callable(concrete):
    """A direct session callable for a traced function of one input and one output, variables frozen.

    The variables become constants of a plain graph (`convert_variables_to_constants_v2`, as the
    TFLite converter does), run by a ``tf.compat.v1.Session`` callable: numpy in, numpy out, one
    C++ call that releases the GIL while it runs. A traced function's Python call path (argument
    binding, eager tensor in/out) costs ~0.2 ms per pass on the 2-core dev machine, held under the GIL
    the event loop needs; the callable cut the server's CPU per request by 4-8% at concurrency 8 in
    interleaved A/Bs (issue 19). The session inherits TensorFlow's thread settings
    (`configure_tf_threads`) and is safe to call from several threads at once.

    Raises:
        Exception: whatever freezing raises for a graph it cannot convert (`compile_inference` then
            keeps the traced function).
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(concrete)
    if len(frozen.inputs) != 1 or len(frozen.outputs) != 1:
        raise ValueError(
            f"expected one input and one output, got {len(frozen.inputs)} / {len(frozen.outputs)}"
        )
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
    session = tf.compat.v1.Session(graph=graph)
    feed = graph.get_tensor_by_name(frozen.inputs[0].name)
    fetch = graph.get_tensor_by_name(frozen.outputs[0].name)
    return session.make_callable(fetch, feed_list=[feed])


def compile_inference(model, image_size: int):
    """Wrap a keras classifier in one compiled graph with a fixed input signature.

    The signature leaves only the batch dimension free, so every batch size reuses one graph (no
    retracing), and the call skips ``model.predict``'s per-call dataset and callback machinery. The
    traced function of a model up to `FREEZE_MAX_PARAMS` parameters is frozen into a session callable
    (`frozen_callable`); a bigger one, or one whose graph cannot be frozen (logged), is served by the
    traced function itself.

    Returns:
        A function (N,S,S,1) float32 numpy -> (N,) float32 numpy probabilities.
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 1], tf.float32)])
    def forward(x):
        return model(x, training=False)

    concrete = forward.get_concrete_function()

    def run(batch):
        return concrete(tf.convert_to_tensor(batch, tf.float32)).numpy()

    if model.count_params() <= FREEZE_MAX_PARAMS:
        try:
            run = frozen_callable(concrete)
        except Exception as exc:  # noqa: BLE001  (any conversion failure: the traced function still serves)
            log.warning("serving the traced function: its graph could not be frozen (%s)", exc)

    def infer(batch: np.ndarray) -> np.ndarray:
        out = np.asarray(run(np.asarray(batch, np.float32)))
        if out.ndim == 2 and out.shape[1] == 1:
            return out[:, 0].astype(np.float32)
        raise ValueError(
            f"classifier returned shape {out.shape}; a mammosynth classifier returns P(malignant) as (N, 1)"
        )

    return infer


def configure_tf_threads(intra_op: int, inter_op: int) -> bool:
    """Set TensorFlow's intra-/inter-op thread pools (0 keeps TF's default) before TF starts.

    Each forward pass is one chain of ops, so an inter-op pool wider than 1 only adds threads that wake
    per op; an intra-op pool as wide as the machine competes with the event loop, which decodes and
    answers requests meanwhile, and with any other pass running at once (`choose_threads`).

    Returns:
        True if applied; False if TensorFlow had already started (the pools are fixed then; logged).
    """
    import tensorflow as tf

    try:
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as exc:
        log.warning("TensorFlow thread pools already fixed, keeping them: %s", exc)
        return False
    return True


# At or below this input size (px) a CPU server runs one intra-op thread per pass and several passes
# at once: at 64 px that halved the CPU per pass and ran 2.8x the passes per second of TF's default
# pool on 2 cores (issue 19). Larger models keep TF's default pool and one pass at a time (unmeasured
# at one thread: a 224-px pass on one core would be slow).
SMALL_MODEL_PX = 128
MAX_INFERENCE_THREADS = 4


def available_cpus() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 quota (a pod's CPU limit)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def choose_threads(
    image_size: int, cpus: int, gpu: bool, intra_op: int = 0, workers: int = 0
) -> tuple[int, int]:
    """The server's TF intra-op pool size and concurrent passes; a 0 argument is chosen here.

    Small models on CPU: one intra-op thread and one pass per core (at most `MAX_INFERENCE_THREADS`);
    otherwise TF's default pool (returned as 0) and one pass at a time. An explicit ``intra_op`` other
    than 1 keeps one pass at a time unless ``workers`` says otherwise.

    Returns:
        ``(intra_op, workers)``: 0 intra-op threads means TF's default.
    """
    if not intra_op and not gpu and image_size <= SMALL_MODEL_PX:
        intra_op = 1
    if not workers:
        workers = min(cpus, MAX_INFERENCE_THREADS) if intra_op == 1 and not gpu else 1
    return intra_op, workers


def resolve_model_dir(uri: str | os.PathLike) -> Path:
    """Return a local model directory for a path or an ``s3://`` URI (downloaded via storage)."""
    text = str(uri)
    if "://" in text and not text.startswith("file://"):
        try:
            from mammosynth import storage
        except ImportError as exc:
            raise RuntimeError(
                f"cannot fetch {text}: mammosynth.storage is not available in this "
                "install; download the model directory and pass a local path"
            ) from exc
        return Path(storage.localize(text))
    return Path(text.removeprefix("file://"))


def model_provenance(meta: dict) -> dict[str, str]:
    """``data_source`` and ``trained_on`` from model.json; a missing or empty field is ``"unknown"``."""
    out = {}
    for key in ("data_source", "trained_on"):
        value = meta.get(key)
        out[key] = str(value) if value not in (None, "") else UNKNOWN
    return out


class MetadataMiddleware:
    """Add the model's ``data_source``/``trained_on`` to ``GET /v{1,2}/models/<name>`` responses.

    KServe's metadata routes answer fixed schemas (v2: name, platform, inputs, outputs; v1: name,
    ready); this ASGI middleware merges the provenance into their JSON so a client can tell a
    phantom-trained model from a real one without reading model.json.

    Args:
        app: the wrapped ASGI app.
        model: the served `MammoModel` (its ``provenance`` is read per request).
    """

    def __init__(self, app, model: MammoModel):
        self.app = app
        self.model = model
        self.paths = {f"/v1/models/{model.name}", f"/v2/models/{model.name}"}

    async def __call__(self, scope, receive, send):
        """Answer metadata GETs for this model with the provenance merged in; pass everything else through."""
        if scope["type"] != "http" or scope.get("method") != "GET" or scope.get("path") not in self.paths:
            return await self.app(scope, receive, send)
        held: dict = {}
        chunks: list[bytes] = []

        async def capture(message):
            if message["type"] == "http.response.start":
                held["start"] = message
                return None
            if message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return None
            return await self._finish(send, held["start"], b"".join(chunks))

        return await self.app(scope, receive, capture)

    async def _finish(self, send, start: dict, body: bytes) -> None:
        if start["status"] == 200:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                body = json.dumps({**doc, **self.model.provenance}).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class MammoModel(Model):
    """KServe model serving one mammosynth classifier directory.

    Args:
        name: model name in URLs (``/v1/models/<name>:predict``, ``/v2/models/<name>/infer``).
        model_dir: local path or ``s3://`` URI of a model directory (`mammosynth.models.io`).
        limits: per-request bounds.
        max_batch_size: most images per forward pass.
        max_wait_ms: how long the batcher waits for more requests after the first.
        inference_threads: most forward passes running at once (`MicroBatcher` ``workers``).
    """

    def __init__(
        self,
        name: str,
        model_dir: str | os.PathLike,
        *,
        limits: Limits | None = None,
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        inference_threads: int = 1,
    ):
        super().__init__(name)
        self.inference_threads = inference_threads
        self.model_dir = model_dir
        self.limits = limits or Limits()
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.meta: dict[str, Any] = {}
        self.image_size = 0
        self.threshold = 0.5
        self.class_names: list[str] = []
        self.version = ""
        self.provenance = {"data_source": UNKNOWN, "trained_on": UNKNOWN}
        self.keras_model = None
        self.batcher: MicroBatcher | None = None
        # Response ids for requests without one: unique per process and cheaper than a uuid4 each.
        self._id_prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)

    def load(self) -> bool:
        """Load the classifier, compile and warm up the inference function, then mark ready.

        Raises:
            FileNotFoundError: the directory is not a model directory.
            ValueError: the model's metadata or output shape does not fit the contract.
        """
        from mammosynth.models.io import load_classifier

        local = resolve_model_dir(self.model_dir)
        self.keras_model, self.meta = load_classifier(local)
        self.image_size = int(self.meta["image_size"])
        self.threshold = float(self.meta.get("threshold", 0.5))
        self.class_names = [str(c) for c in self.meta.get("class_names", ["benign", "malignant"])]
        if len(self.class_names) != 2:
            raise ValueError(f"{local}/model.json: class_names must name 2 classes, got {self.class_names}")
        self.version = str(self.meta.get("version", "1"))
        self.provenance = model_provenance(self.meta)
        infer = compile_inference(self.keras_model, self.image_size)
        # Trace now so the first request does not pay for graph building.
        infer(np.zeros((1, self.image_size, self.image_size, 1), np.float32))
        self.batcher = MicroBatcher(infer, self.max_batch_size, self.max_wait_ms, self.inference_threads)
        log.info(
            "loaded %s (version %s, %d px input) from %s",
            self.meta.get("name", self.name),
            self.version,
            self.image_size,
            local,
        )
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """Close the micro-batcher (pending callers are cancelled), then stop as KServe's `Model` does."""
        if self.batcher is not None:
            self.batcher.close()
        super().stop()

    # --- metadata (v2 /v2/models/<name>) -------------------------------------------------------
    def get_input_types(self) -> list[dict]:
        """The v2 inputs: ``image`` (encoded PNG/JPEG/DICOM bytes, base64 in JSON) or ``tensor`` (N,S,S,1 FP32)."""
        s = self.image_size
        return [
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "tensor", "datatype": "FP32", "shape": [-1, s, s, 1]},
        ]

    def get_output_types(self) -> list[dict]:
        """The v2 outputs: ``probability`` (P(malignant), malignant = 1) and ``label`` (its class name)."""
        return [
            {"name": "probability", "datatype": "FP32", "shape": [-1]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ]

    # --- inference -----------------------------------------------------------------------------
    async def decode(self, payload: dict | InferRequest) -> np.ndarray:
        """Turn a v1 dict or v2 `InferRequest` into an (N,S,S,1) batch.

        Image decoding (base64, PNG/JPEG/DICOM) runs off the event loop; v2 FP32 tensors, which the
        server has already parsed, are checked inline.
        """
        if isinstance(payload, InferRequest):
            if all(
                i.datatype == "FP32" and _elements(i.shape) <= INLINE_ELEMENTS for i in payload.inputs or []
            ):
                # Small parsed tensors only need a reshape and a range check: a thread hop costs more.
                return v2_inputs(payload, self.image_size, self.limits)
            return await asyncio.to_thread(v2_inputs, payload, self.image_size, self.limits)
        return await asyncio.to_thread(v1_instances, payload, self.image_size, self.limits)

    async def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """P(malignant) for an (N,S,S,1) batch through the micro-batcher."""
        return await self.batcher.submit(batch)

    def labels(self, probs: np.ndarray) -> list[str]:
        """``class_names[1]`` (malignant, the positive class) where P reaches the threshold, else ``class_names[0]``."""
        return [self.class_names[int(p >= self.threshold)] for p in probs]

    async def predict(
        self,
        payload: dict | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict | InferResponse:
        """Decode the request, run the classifier through the micro-batcher, and answer v1 or v2.

        Raises:
            InvalidInput: the body is not a JSON object, an input is malformed, or there are more
                images than ``max_instances`` (HTTP 400).
            PayloadTooLarge: an image over the pixel budget (HTTP 413).
            InferenceError: the classifier produced non-finite probabilities (HTTP 500).
        """
        if not isinstance(payload, (dict, InferRequest)):
            raise InvalidInput(
                f'request body must be a JSON object {{"instances": [...]}}, got {type(payload).__name__}'
            )
        self.batcher.announce()
        try:
            batch = await self.decode(payload)
        except BaseException:
            self.batcher.withdraw()
            raise
        probs = await self.batcher.submit(batch, announced=True)
        if not np.isfinite(probs).all():
            # Never answer "benign" for a NaN: the input was valid, so this is the server's fault (500).
            raise InferenceError(
                f"the classifier produced non-finite probabilities for {int((~np.isfinite(probs)).sum())} "
                "image(s); check the model and the shared preprocessing"
            )
        return self.respond(payload, probs)

    @property
    def warning(self) -> str | None:
        """The warning every prediction carries (a phantom-trained model), else None."""
        return PHANTOM_WARNING if self.provenance["data_source"] == "phantom" else None

    def respond(self, payload: dict | InferRequest, probs: np.ndarray) -> dict | InferResponse:
        """Build the v1 dict or v2 `InferResponse` for ``probs`` (with ``warning`` for phantom models)."""
        labels = self.labels(probs)
        warning = self.warning
        if not isinstance(payload, InferRequest):
            body = {
                "predictions": [
                    {"probability": float(p), "label": lab, "model_version": self.version}
                    for p, lab in zip(probs, labels, strict=True)
                ],
                "model_name": self.name,
                "model_version": self.version,
            }
            return {**body, "warning": warning} if warning else body
        n = len(probs)
        outputs = [
            InferOutput("probability", [n], "FP32", data=np.asarray(probs, np.float32)),
            InferOutput("label", [n], "BYTES", data=np.array(labels, dtype=np.object_)),
        ]
        return InferResponse(
            response_id=payload.id or f"{self._id_prefix}-{next(self._ids)}",
            model_name=self.name,
            model_version=self.version,
            infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
            parameters={"warning": warning} if warning else None,
        )
