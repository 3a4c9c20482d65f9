"""Run by test_gen_resume: a generate run slowed down per shard so the test can kill it mid-way.

usage: python _resume_worker.py WORKSPACE MODEL_DIR N_PROMPTS DELAY_S
"""

import sys
import time

from prefdata.generate import model_hash
from prefdata.generate.hf_backend import TransformersBackend
from prefdata.store import Workspace
from tests.generate.conftest import make_prompts
from tests.generate.test_gen_resume import resume_config


class SlowBackend(TransformersBackend):
    def generate(self, requests, sampling):
        out = super().generate(requests, sampling)
        time.sleep(DELAY)  # after the model work, before the part is written: a kill can land mid-shard
        return out


if __name__ == "__main__":
    ws_path, model, n_prompts, DELAY = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    from prefdata.generate import generate_candidates

    backend = SlowBackend(model, model_hash(model))
    print("started", flush=True)
    generate_candidates(Workspace.create(ws_path), make_prompts(n_prompts), resume_config(model), backend=backend)
    print("finished", flush=True)
