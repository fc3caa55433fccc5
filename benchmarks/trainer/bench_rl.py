"""Reinforcement-learning benchmark: the aidc trainer's PPO on 1 and 2 ranks beside a minimal loop.

The minimal loop is what one writes in a single file in the CleanRL style: SyncVectorEnv, one
actor-critic, GAE, the clipped loss, CleanRL's hyperparameters (4 environments, 128 steps, 4 epochs
of 4 minibatches, learning rate 2.5e-4 annealed). The trainer runs as a real gang of processes
(``python -m aidc_trainer``, gloo), so its wall time includes start-up and the final evaluation.

Rows: the minimal loop and the trainer on 1 and 2 ranks with CleanRL's defaults (steps/s, side by
side); then the hyperparameters of ``examples/trainingjob-cartpole.yaml`` on 2 ranks and on 1 rank
stepping the same environments in all (wall time to the target); with ``--pendulum`` the same for
``examples/trainingjob-pendulum.yaml`` over 300,000 steps. Last, one gloo all-reduce of the policy's
gradient between 2 processes, which DDP pays once per minibatch and which decides whether 2 ranks
can beat 1 on a given machine.

Each row trains once, then evaluates the deterministic policy over 10 episodes. "wall to target" is
the whole run's wall time when that final evaluation reaches the target (475 for CartPole-v1,
Gymnasium's "solved"; -250 for Pendulum-v1), else "not reached": the trainer evaluates only at the
end, so it is an upper bound. Prints tables; asserts nothing.
``python benchmarks/trainer/bench_rl.py [--steps N] [--pendulum]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from torch import nn

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


EXAMPLES = REPO / "examples"
PER_RUN = ("environment", "totalSteps", "evaluationEpisodes")  # what each row sets itself


def example_preset(file: str, ranks: int) -> dict[str, Any]:
    """An example TrainingJob's hyperparameters for ``ranks`` ranks with the example's environments
    in all: one rank steps every environment the example's gang steps, so both learn alike."""
    spec = yaml.safe_load((EXAMPLES / file).read_text())["spec"]
    block = {k: v for k, v in spec["trainer"]["reinforcementLearning"].items() if k not in PER_RUN}
    block["envsPerRank"] = block["envsPerRank"] * spec["replicas"] // ranks
    return {"learningRate": spec["trainer"].get("learningRate", 2.5e-4), "block": block}


def aidc_run(
    env_id: str, steps: int, ranks: int, seed: int, scratch: Path, preset: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train with the real trainer on ``ranks`` gloo processes; its summary and the wall time."""
    block = {"environment": {"gymnasiumId": env_id}, "totalSteps": steps, "evaluationEpisodes": 10}
    config: dict[str, Any] = {"task": "reinforcement-learning", "seed": seed, "reinforcementLearning": block}
    if preset is not None:
        block.update(preset["block"])
        config["learningRate"] = preset["learningRate"]
    scratch = Path(tempfile.mkdtemp(dir=scratch))  # a run of its own: nothing to resume from
    directory = scratch / "checkpoints"
    port = str(free_port())
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIDC_", "PET_"))}
    processes = []
    started = time.monotonic()
    for rank in range(ranks):
        env = {
            **base,
            "PYTHONPATH": str(REPO / "trainer-image"),
            "OMP_NUM_THREADS": "1",
            "AIDC_TRAINER_CONFIG": json.dumps(config),
            "AIDC_CHECKPOINT_DIR": str(directory),
            "AIDC_METRICS_PORT": "0",
            "AIDC_TERMINATION_LOG": str(scratch / f"termination-{ranks}-{rank}"),
            **{"RANK": str(rank), "WORLD_SIZE": str(ranks), "LOCAL_RANK": "0", "NODE_RANK": str(rank)},
            **{"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
        }
        command = [sys.executable, "-m", "aidc_trainer"]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    errors = [p.communicate(timeout=1800)[1].decode(errors="replace") for p in processes]
    wall = time.monotonic() - started
    if any(p.returncode for p in processes):
        raise RuntimeError("the trainer failed:\n" + "\n".join(errors)[-3000:])
    summary = json.loads((scratch / f"termination-{ranks}-0").read_text())
    return {
        "stepsPerSecond": summary["samplesPerSecond"],
        "wall": wall,
        "evaluationReturn": summary["metrics"].get("evaluationReturn"),
    }


# --- the minimal loop: one file, the CleanRL shape -----------------------------------------------


def _mlp(inputs: int, outputs: int, gain: float) -> nn.Sequential:
    layers = [nn.Linear(inputs, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, outputs)]
    for layer, g in zip(layers[::2], (2**0.5, 2**0.5, gain), strict=True):
        nn.init.orthogonal_(layer.weight, g)  # type: ignore[arg-type]
        nn.init.zeros_(layer.bias)  # type: ignore[arg-type]
    return nn.Sequential(*layers)


def minimal_ppo(env_id: str, steps: int, seed: int) -> dict[str, Any]:
    """Discrete-action PPO in one function; returns steps/s, wall time and the evaluation."""
    started = time.monotonic()
    torch.manual_seed(seed)
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make(env_id) for _ in range(4)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    obs_dim, n_actions = envs.single_observation_space.shape[0], int(envs.single_action_space.n)  # type: ignore[index, attr-defined]
    actor, critic = _mlp(obs_dim, n_actions, 0.01), _mlp(obs_dim, 1, 1.0)
    parameters = [*actor.parameters(), *critic.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=2.5e-4, eps=1e-5)
    rollout, batch = 128, 4 * 128
    iterations = steps // batch
    obs = torch.tensor(envs.reset(seed=seed)[0], dtype=torch.float32)
    loop_started = time.monotonic()
    for iteration in range(iterations):
        optimizer.param_groups[0]["lr"] = 2.5e-4 * (1 - iteration / iterations)
        b_obs, b_act, b_logp, b_val, b_rew, b_done = [], [], [], [], [], []
        with torch.no_grad():
            for _ in range(rollout):
                dist = torch.distributions.Categorical(logits=actor(obs))
                action = dist.sample()
                b_obs.append(obs)
                b_act.append(action)
                b_logp.append(dist.log_prob(action))
                b_val.append(critic(obs).squeeze(-1))
                next_obs, reward, term, trunc, _ = envs.step(action.numpy())
                b_rew.append(torch.tensor(reward, dtype=torch.float32))
                b_done.append(torch.tensor(term | trunc, dtype=torch.float32))
                obs = torch.tensor(next_obs, dtype=torch.float32)
            values, rewards, dones = torch.stack(b_val), torch.stack(b_rew), torch.stack(b_done)
            advantages, carried = torch.zeros_like(rewards), torch.zeros(4)
            following = critic(obs).squeeze(-1)
            for t in reversed(range(rollout)):
                alive = 1 - dones[t]
                delta = rewards[t] + 0.99 * following * alive - values[t]
                carried = delta + 0.99 * 0.95 * alive * carried
                advantages[t], following = carried, values[t]
            returns = advantages + values
        flat = [torch.stack(b_obs).flatten(0, 1), torch.stack(b_act).flatten(), torch.stack(b_logp).flatten()]
        f_obs, f_act, f_logp = flat
        f_adv, f_ret, f_val = advantages.flatten(), returns.flatten(), values.flatten()
        for _ in range(4):
            order = torch.randperm(batch)
            for start in range(0, batch, batch // 4):
                i = order[start : start + batch // 4]
                dist = torch.distributions.Categorical(logits=actor(f_obs[i]))
                ratio = (dist.log_prob(f_act[i]) - f_logp[i]).exp()
                adv = (f_adv[i] - f_adv[i].mean()) / (f_adv[i].std() + 1e-8)
                policy = torch.max(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)).mean()
                value = critic(f_obs[i]).squeeze(-1)
                clipped = f_val[i] + (value - f_val[i]).clamp(-0.2, 0.2)
                v_loss = 0.5 * torch.max((value - f_ret[i]) ** 2, (clipped - f_ret[i]) ** 2).mean()
                loss = policy - 0.01 * dist.entropy().mean() + 0.5 * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(parameters, 0.5)
                optimizer.step()
    rate = iterations * batch / (time.monotonic() - loop_started)
    evaluation = _evaluate(env_id, actor, seed)
    return {"stepsPerSecond": rate, "wall": time.monotonic() - started, "evaluationReturn": evaluation}


def _evaluate(env_id: str, actor: nn.Module, seed: int) -> float:
    env, total = gym.make(env_id), 0.0
    for episode in range(10):
        obs, _ = env.reset(seed=seed + 1_000_000 + episode)
        done = False
        while not done:
            with torch.no_grad():
                action = int(actor(torch.tensor(obs, dtype=torch.float32)).argmax())
            obs, reward, term, trunc, _ = env.step(action)
            total, done = total + float(reward), bool(term or trunc)
    return total / 10


def _all_reduce_latency(rank: int, port: int, floats: int, out: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    gradient = torch.zeros(floats)
    for _ in range(20):
        dist.all_reduce(gradient)
    started, rounds = time.perf_counter(), 300
    for _ in range(rounds):
        dist.all_reduce(gradient)
    if rank == 0:
        out.put((time.perf_counter() - started) / rounds)
    dist.destroy_process_group()


def all_reduce_seconds(floats: int) -> float:
    """One gloo all-reduce of ``floats`` between 2 processes of this machine: what DDP pays per minibatch."""
    context = mp.get_context("spawn")
    out = context.Queue()
    mp.spawn(_all_reduce_latency, args=(free_port(), floats, out), nprocs=2)
    return float(out.get())


def policy_floats(env_id: str) -> int:
    from aidc_trainer.rl.policy import build_policy
    from aidc_trainer.tasks.reinforcement_learning import describe_spaces

    env = gym.make(env_id)
    model = build_policy({"hidden": 64, **describe_spaces(env.observation_space, env.action_space)})
    return sum(p.numel() for p in model.parameters())


def _print_table(title: str, rows: list[tuple[str, dict[str, Any]]], target: float) -> None:
    print(f"\n{title}")
    print("| run | steps/s | wall s | wall to target | final eval return |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in rows:
        reached = f"{r['wall']:.1f}" if (r["evaluationReturn"] or -math.inf) >= target else "not reached"
        print(f"| {name} | {r['stepsPerSecond']:.0f} | {r['wall']:.1f} | {reached} | {r['evaluationReturn']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--target", type=float, default=475.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pendulum", action="store_true", help="also Pendulum-v1 (300k steps) by its example")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO / "trainer-image"))
    steps, seed = arguments.steps, arguments.seed
    rows: list[tuple[str, dict[str, Any]]] = []
    pendulum: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        rows.append(("minimal loop (1 process), CleanRL's defaults", minimal_ppo("CartPole-v1", steps, seed)))
        for ranks in (1, 2):
            result = aidc_run("CartPole-v1", steps, ranks, seed, scratch)
            rows.append((f"aidc trainer, {ranks} rank(s), CleanRL's defaults", result))
        for ranks in (1, 2):
            preset = example_preset("trainingjob-cartpole.yaml", ranks)
            result = aidc_run("CartPole-v1", steps, ranks, seed, scratch, preset)
            rows.append((f"aidc trainer, {ranks} rank(s), examples/trainingjob-cartpole.yaml", result))
        if arguments.pendulum:
            for ranks in (1, 2):
                preset = example_preset("trainingjob-pendulum.yaml", ranks)
                result = aidc_run("Pendulum-v1", 300_000, ranks, seed, scratch, preset)
                pendulum.append((f"aidc trainer, {ranks} rank(s), examples/trainingjob-pendulum.yaml", result))
    floats = policy_floats("CartPole-v1")
    latency = all_reduce_seconds(floats)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    print(f"\ncommit {commit}; {machine}; seed {seed}")
    _print_table(f"CartPole-v1, {steps} steps, target {arguments.target}", rows, arguments.target)
    if pendulum:
        _print_table("Pendulum-v1, 300000 steps, target -250", pendulum, -250.0)
    minimal, one_rank = rows[0][1]["stepsPerSecond"], rows[1][1]["stepsPerSecond"]
    print(f"\ntrainer (1 rank) / minimal loop steps/s: {one_rank / minimal:.2f}x (target >= 0.9x)")
    print(f"gloo all-reduce of the policy's {floats} gradient floats between 2 processes: {latency * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
