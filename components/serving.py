"""Serving component: export the final classifier and create/update its InferenceService."""

from kfp import dsl
from kfp.dsl import Input, Model

from components.image import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def deploy(
    final_model: Input[Model],
    model_uri: str = "",
    namespace: str = "mammosynth",
    service_name: str = "mammosynth",
) -> str:
    """Export both serving layouts to model_uri and apply the InferenceService (skipped outside a cluster).

    Returns:
        What was done: the served URL in-cluster, or a note that the deploy was skipped locally.
    """
    from mammosynth import study

    return study.deploy_step(
        final_model.path, model_uri=model_uri, namespace=namespace, service_name=service_name
    )
