"""KServe model server for mammosynth classifiers.

`python -m mammosynth.serving --model <dir|s3://...>` (or `mammosynth serve`) serves a model
directory over KServe's v1 (``/v1/models/mammosynth:predict``) and Open Inference Protocol v2
(``/v2/models/mammosynth/infer``) endpoints. Modules: `model` (the `kserve.Model`), `inputs`
(request decoding, shared preprocessing), `batcher` (micro-batching), `limits` (payload bound),
`v2json` (plain v2 FP32 JSON bodies parsed by KServe's orjson path).
Nothing here is imported by the training code, so the trainer image needs no kserve.
"""

# The name the model is served under, locally (`mammosynth serve`, ``--model_name``'s default) and in the
# cluster (the deploy step's InferenceService is named this, and KServe serves a model under its
# InferenceService's name): /v1/models/mammosynth:predict and /v2/models/mammosynth/infer on both.
SERVED_MODEL_NAME = "mammosynth"
