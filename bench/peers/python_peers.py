"""The Python side of bench/peers/run: the three workloads in PuffinFlow and LangGraph.

Usage: python_peers.py <system> <workload> <size> <reps>
  system:   puffinflow | puffinflow_send | langgraph
  workload: chain | fanout | io
Prints one tab-separated line, like the Rust binary:
  system  workload  size  median_ns  min_ns  max_ns     (or: system workload size n/a reason)

Each repetition builds the workflow outside the timed region, then times one whole run
(`await agent.run()` / `await app.ainvoke()`) on a fresh asyncio event loop's default
scheduler. One untimed warm-up run comes first.
"""

import asyncio
import operator
import statistics  # noqa: F401  (kept for readers who want means)
import sys
import time
from typing import Annotated, TypedDict

IO_WAIT = 0.010  # seconds: the simulated I/O of workload (c)


# --------------------------------------------------------------------------- PuffinFlow
# PuffinFlow 2.1 runs a state at most once per run (a completed state is not queued again),
# so the chain is N distinct states made with add_state, each returning the next one's
# name. Its two fan-out forms are both measured:
#  - "puffinflow": the fan state returns a list of W distinct state names (the add_state
#    idiom); the agent queues them and its run loop awaits them one after another; each
#    returns "join", which runs once (a state runs at most once).
#  - "puffinflow_send": the fan state returns [Send("work", ...) x W, "join"]; the agent runs
#    the Sends with asyncio.gather on copies of the context and merges their Command updates
#    with a reducer, then goes on to "join".


def pf_chain(n):
    from puffinflow import Agent

    agent = Agent("chain")
    names = [f"s{i}" for i in range(n)]
    for i in range(n):
        nxt = names[i + 1] if i + 1 < n else None

        async def step(ctx, nxt=nxt):
            ctx.set_variable("n", ctx.get_variable("n", 0) + 1)  # the one context write
            return nxt

        agent.add_state(names[i], step)

    def check(result):
        got = result.get_variable("n")
        if got != n:
            raise RuntimeError(f"puffinflow chain counted {got}, expected {n}")

    return (lambda: agent.run(initial_context={"n": 0})), check


def pf_fan_names(w, io):
    from puffinflow import Agent

    agent = Agent("fan")
    names = [f"w{i}" for i in range(w)]

    async def fan(ctx):
        return names

    async def work(ctx):
        if io:
            await asyncio.sleep(IO_WAIT)
        ctx.set_variable("hits", ctx.get_variable("hits", 0) + 1)
        return "join"

    async def join(ctx):
        ctx.set_variable("joined", ctx.get_variable("joined", 0) + 1)
        return None

    agent.add_state("fan", fan)
    for name in names:
        agent.add_state(name, work)
    agent.add_state("join", join)

    def check(result):
        hits, joined = result.get_variable("hits"), result.get_variable("joined")
        if hits != w or joined != 1:
            raise RuntimeError(f"puffinflow fan-out: {hits} branches, {joined} joins; expected {w}, 1")

    return (lambda: agent.run(initial_context={"hits": 0, "joined": 0})), check


def pf_fan_send(w, io):
    from puffinflow import Agent, Command, Send, add_reducer

    agent = Agent("fan_send")

    async def fan(ctx):
        return [Send("work", {"i": i}) for i in range(w)] + ["join"]

    async def work(ctx):
        if io:
            await asyncio.sleep(IO_WAIT)
        return Command(update={"hits": 1})  # merged by the reducer (number add)

    async def join(ctx):
        ctx.set_variable("joined", ctx.get_variable("joined", 0) + 1)
        return None

    agent.add_state("fan", fan)
    agent.add_state("work", work, entry_point=False)
    agent.add_state("join", join, entry_point=False)
    agent.add_reducer("hits", add_reducer)

    def check(result):
        hits, joined = result.get_variable("hits"), result.get_variable("joined")
        if hits != w or joined != 1:
            raise RuntimeError(f"puffinflow Send fan-out: {hits} branches, {joined} joins; expected {w}, 1")

    return (lambda: agent.run(initial_context={"hits": 0, "joined": 0})), check


# --------------------------------------------------------------------------- LangGraph
# LangGraph: a StateGraph over a TypedDict state; each node returns a partial update.
#  - chain: a ring of ten nodes; each adds one to "n" and a conditional edge picks the next
#    node or END at N (recursion_limit raised to N + 10: every step is a super-step).
#  - fan-out: a conditional edge from "fan" returns W Send("work", ...) objects; each work
#    node returns {"hits": 1}, summed by an operator.add reducer; an edge work -> join
#    runs "join" once, in the super-step after all branches.


class ChainState(TypedDict):
    n: int


class FanState(TypedDict):
    hits: Annotated[int, operator.add]
    joined: int


def lg_chain(n):
    from langgraph.graph import END, START, StateGraph

    g = StateGraph(ChainState)
    ring = [f"s{i}" for i in range(10)]

    async def step(state):
        return {"n": state["n"] + 1}

    for i, name in enumerate(ring):
        g.add_node(name, step)
        nxt = ring[(i + 1) % 10]
        g.add_conditional_edges(name, lambda s, nxt=nxt: nxt if s["n"] < n else END, [nxt, END])
    g.add_edge(START, "s0")
    app = g.compile()
    config = {"recursion_limit": n + 10}

    def check(result):
        if result["n"] != n:
            raise RuntimeError(f"langgraph chain counted {result['n']}, expected {n}")

    return (lambda: app.ainvoke({"n": 0}, config)), check


def lg_fan(w, io):
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    g = StateGraph(FanState)

    async def fan(state):
        return {}

    async def work(state):
        if io:
            await asyncio.sleep(IO_WAIT)
        return {"hits": 1}

    async def join(state):
        return {"joined": state.get("joined", 0) + 1}

    g.add_node("fan", fan)
    g.add_node("work", work)
    g.add_node("join", join)
    g.add_edge(START, "fan")
    g.add_conditional_edges("fan", lambda s: [Send("work", {"i": i}) for i in range(w)], ["work"])
    g.add_edge("work", "join")
    g.add_edge("join", END)
    app = g.compile()

    def check(result):
        if result["hits"] != w or result["joined"] != 1:
            raise RuntimeError(f"langgraph fan-out: {result['hits']} branches, {result['joined']} joins")

    return (lambda: app.ainvoke({"hits": 0, "joined": 0})), check


BUILDERS = {
    ("puffinflow", "chain"): pf_chain,
    ("puffinflow", "fanout"): lambda w: pf_fan_names(w, False),
    ("puffinflow", "io"): lambda w: pf_fan_names(w, True),
    ("puffinflow_send", "fanout"): lambda w: pf_fan_send(w, False),
    ("puffinflow_send", "io"): lambda w: pf_fan_send(w, True),
    ("langgraph", "chain"): lg_chain,
    ("langgraph", "fanout"): lambda w: lg_fan(w, False),
    ("langgraph", "io"): lambda w: lg_fan(w, True),
}


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    system, workload, size, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    build = BUILDERS.get((system, workload))
    if build is None:
        print(f"{system}\t{workload}\t{size}\tn/a\tnot defined")
        return
    times = []
    try:
        for i in range(reps + 1):
            run, check = build(size)  # built outside the timed region

            async def once():
                t = time.perf_counter_ns()
                result = await run()
                return result, time.perf_counter_ns() - t

            result, ns = asyncio.run(once())
            check(result)
            if i > 0:
                times.append(ns)
    except Exception as e:  # report, don't fake: the table shows the reason
        reason = f"{type(e).__name__}: {e}".replace("\t", " ").replace("\n", " ")[:120]
        print(f"{system}\t{workload}\t{size}\tn/a\t{reason}")
        return
    times.sort()
    print(f"{system}\t{workload}\t{size}\t{times[len(times) // 2]}\t{times[0]}\t{times[-1]}")


if __name__ == "__main__":
    main()
