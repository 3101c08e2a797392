"""A notebook's cells (``# %%`` marks each one, as Jupytext, VS Code and Spyder read them).

    python examples/recipes/notebook.py

Run as a script, every cell runs once.  In a notebook the first cell is the set-up cell: it
can be run again (after editing a setting, say) without adding a second handler or sending
anything twice.  Traces go where ``INFINIUM_BASE_URL``, ``INFINIUM_AGENT_ID`` and
``INFINIUM_AGENT_SECRET`` say; when ``INFINIUM_BASE_URL`` is not set, the set-up cell starts a
local collector in the kernel and the last cell shows what it received.
"""

# %% Set-up cell: safe to run again
import logging
import os

from infinium_logging import InfiniumHandler, get_default_exporter, task
from infinium_logging.collector import LocalCollector

if not os.environ.get("INFINIUM_BASE_URL"):  # no endpoint configured: a local one, once
    collector = LocalCollector(port=0, db=":memory:").start()
    os.environ["INFINIUM_BASE_URL"] = collector.base_url
    os.environ.setdefault("INFINIUM_AGENT_ID", "3f1c2b9e-8d7a-4e61-9f3b-2a5c6d7e8f90")
    os.environ.setdefault("INFINIUM_AGENT_SECRET", "local-notebook-secret")

# force=True first removes (and closes) the handlers the last run of this cell added.
logging.basicConfig(
    level=logging.INFO,
    format="%(levelname)s %(name)s: %(message)s",
    handlers=[logging.StreamHandler(), InfiniumHandler()],
    force=True,
)
log = logging.getLogger("churn_notebook")

# %% Work cell: a tagged event is one trace, a task() block another
log.info("Loaded the accounts", extra={"infinium": {"output_summary": "1,204 accounts"}})

with task("Score churn risk", expected_outcome={"task_objective": "Flag risky accounts"}) as t:
    call = {"model": "gpt-4o-mini", "prompt_tokens": 1430, "completion_tokens": 212}
    log.info("Asked the model to score the accounts", extra={"llm_call": call})
    log.info("Flagged the risky ones", extra={"flagged": 37})
    t.update(output_summary="37 accounts flagged")

# %% Look at what arrived: traces leave in the background; flush() waits for them
get_default_exporter().flush(timeout=10)
if "collector" in globals():
    collector.wait_for(2, timeout=10)
    for received in collector.traces():
        print(f"trace {received.task.name!r}: {len(received.task.steps or ())} steps")
