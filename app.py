"""brainseg demo entry point (Hugging Face Spaces, or `python app.py` locally).

Loads the U-Net and SAM decoders a run wrote (BRAINSEG_OUTPUT_DIR, default outputs/) and serves the
Gradio demo. SAM weights other than the bundled LiteMedSAM come from SAM_CHECKPOINT (a path, or
vit_b=/a.pth,medsam=/b.pth) or are searched for as in the notebooks (brainseg_utils.models.sam.discovery).
Public share links stay off unless BRAINSEG_SHARE=1; set BRAINSEG_AUTH=user:password to protect one.
"""

import os

from brainseg_utils.app.demo import build_demo, launch
from brainseg_utils.app.examples import make_examples
from brainseg_utils.app.predictor import predictor_from_run

OUTPUT_DIR = os.environ.get("BRAINSEG_OUTPUT_DIR", "outputs")
predictor = predictor_from_run(
    OUTPUT_DIR,
    device=os.environ.get("BRAINSEG_DEVICE", "auto"),
    sam_checkpoint=os.environ.get("SAM_CHECKPOINT", ""),
)
if predictor.backend is not None:
    print(f"SAM backend {predictor.backend.name}: {predictor.backend.provenance}")
try:
    examples = make_examples(OUTPUT_DIR)
except (FileNotFoundError, KeyError):  # a Space may ship checkpoints without the dataset
    examples = []
demo = build_demo(predictor, examples)

if __name__ == "__main__":
    auth = os.environ.get("BRAINSEG_AUTH")
    launch(
        demo,
        share=os.environ.get("BRAINSEG_SHARE") == "1",
        auth=tuple(auth.split(":", 1)) if auth else None,
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        allowed_paths=[os.path.join(OUTPUT_DIR, "demo", "examples")],
    )
