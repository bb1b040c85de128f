"""Make a session's class images in this process and SIGKILL it right after image N is written.

    KILL_AFTER_IMAGES=N python kill_during_generation.py STORAGE SESSION MODEL_PATH MODEL_DIGEST COUNT

The fault hook lives here, in the tests: the code under test only calls its on_image callback."""

import os
import signal
import sys

from dreambooth_core.generation.class_images import build_class_images
from dreambooth_core.session.folder import Session


def main(storage: str, name: str, model_path: str, model_digest: str, count: str) -> None:
    kill_after, written = int(os.environ["KILL_AFTER_IMAGES"]), []

    def on_image(index: int) -> None:
        written.append(index)
        if len(written) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    build_class_images(Session(storage, name), storage, model_path, model_digest, 64, "cpu", int(count),
                       steps=2, batch_size=2, on_image=on_image)


if __name__ == "__main__":
    main(*sys.argv[1:])
