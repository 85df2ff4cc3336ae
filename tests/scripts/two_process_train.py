"""Data-parallel training of a small LSTM for 5 updates; prints the losses as JSON.

Then ``rnnjax.train.fit`` on to update 10, where process 1 alone receives SIGTERM after
update 7 (one process: nobody does, and it runs to 10).

Run by tests/test_distributed.py once as one process and once as two processes on
loopback (``JAX_COORDINATOR_ADDRESS`` etc.), which join through
``rnnjax.distributed.initialize`` before any other JAX call.
"""

import json

from rnnjax import distributed

joined = distributed.initialize()

import jax  # noqa: E402
import numpy as np  # noqa: E402

import rnnjax  # noqa: E402
from rnnjax import train as tr  # noqa: E402
from rnnjax.modules import SequenceModel  # noqa: E402
from rnnjax.tasks import make_task  # noqa: E402

task = make_task("adding", seq_len=8)
model = SequenceModel(rnnjax.make_layer("lstm", 8), 1, head="last")
opt, sched = tr.make_optimizer("adam", 1e-2, clip_norm=1.0)


def loss_fn(params, batch, key):
    return task.loss(model.apply({"params": params}, batch.inputs, batch.lengths), batch), {}


step = tr.make_train_step(loss_fn, opt, clip_norm=1.0, schedule=sched)
ex = task.sample(jax.random.key(0), 2)
params = model.init(jax.random.key(0), ex.inputs, ex.lengths)["params"]
state = tr.init_state(params, opt, jax.random.key(0))
mesh = distributed.data_mesh()
par = distributed.parallel_step(step, mesh, "data")
state = distributed.place_state(jax.device_get(state), mesh)
losses = []
for i in range(5):
    batch = jax.device_get(task.sample(jax.random.key(100 + i), 16))
    state, m = par(state, batch)
    losses.append(float(np.asarray(m["loss"])))
# A signal reaching one process only: process 1 signals itself after update 2. Every
# process must stop after that same update and save it, not wait on the others.
import os  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402

from rnnjax.checkpoint import Checkpointer  # noqa: E402


def signal_process_1(done, metrics, state):
    if done == 7 and jax.process_index() == 1:
        os.kill(os.getpid(), signal.SIGTERM)


ckpt_dir = os.environ.get("CKPT_DIR") or tempfile.mkdtemp()
ckpt = Checkpointer(ckpt_dir)
try:
    tr.fit(
        state,
        par,
        lambda i: jax.device_get(task.sample(jax.random.key(100 + i), 16)),
        num_steps=10,
        checkpointer=ckpt,
        on_step=signal_process_1,
        progress=False,
    )
    stopped = None
except tr.TrainingInterrupted as err:
    stopped = [err.step, err.signum]
saved = ckpt.steps()
ckpt.close()
record = {
    "joined": joined,
    "process": jax.process_index(),
    "processes": jax.process_count(),
    "devices": len(jax.devices()),
    "losses": losses,
    "stopped": stopped,
    "saved": saved,
}
print(json.dumps(record))
