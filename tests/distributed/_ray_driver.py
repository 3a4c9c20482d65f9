"""Run by test_ray.py: a Ray generation driver, slowed after each shard so the test can SIGKILL it.

usage: python _ray_driver.py RAY_ADDRESS WORKSPACE MODEL_DIR N_PROMPTS DELAY_S
"""

import sys
import time

from prefdata.distributed.ray_generate import RayBackend
from prefdata.generate import generate_candidates, model_hash
from prefdata.store import Workspace
from tests.distributed.test_ray import config
from tests.generate.conftest import make_prompts


class SlowRayBackend(RayBackend):
    def generate(self, requests, sampling):
        out = super().generate(requests, sampling)
        time.sleep(DELAY)  # after the actors' work, before the driver writes the part
        return out


if __name__ == "__main__":
    address, ws_path, model, n_prompts, DELAY = sys.argv[1:4] + [int(sys.argv[4]), float(sys.argv[5])]
    cfg = config(model)
    backend = SlowRayBackend(cfg, model_hash(model), actors=2, address=address)
    generate_candidates(Workspace.create(ws_path), make_prompts(n_prompts), cfg, backend=backend)
    print("finished", flush=True)
