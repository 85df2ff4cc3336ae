"""Data-parallel training of a small LSTM for 5 updates; prints the losses as JSON.

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
record = {
    "joined": joined,
    "process": jax.process_index(),
    "processes": jax.process_count(),
    "devices": len(jax.devices()),
    "losses": losses,
}
print(json.dumps(record))
