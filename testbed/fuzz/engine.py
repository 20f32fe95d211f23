"""The fuzz loop: generate, feed, classify what escaped, keep every failing input.

A finding is identified by its signature (exception type and the innermost frame of project
code), so a campaign of a million inputs saves one vector per distinct bug, not one per input.
A vector file holds the episode that led to the failure, one hex-encoded input per line, and
`replay_vector` feeds it to a fresh driver.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from testbed.fuzz.targets import Target

VECTOR_SUFFIX = ".hex"
PROGRESS_EVERY = 50_000  # inputs between progress reports


@dataclass
class Finding:
    signature: str
    message: str
    vector: Path | None
    count: int = 1


@dataclass
class CampaignResult:
    target: str
    inputs: int
    seconds: float
    escaped: Counter[str] = field(default_factory=Counter)  # allowed project errors, by type
    findings: dict[str, Finding] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"target": self.target, "inputs": self.inputs, "seconds": round(self.seconds, 2),
                "inputs_per_s": round(self.rate), "escaped": dict(self.escaped),
                "findings": [{"signature": f.signature, "message": f.message, "count": f.count,
                              "vector": str(f.vector) if f.vector else None}
                             for f in self.findings.values()]}


def signature(error: BaseException) -> str:
    """Exception type plus the innermost frame in the project (file:line)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if "/testbed/" in f.filename or "/middleboxes/" in f.filename]
    where = frames[-1] if frames else None
    place = f"{Path(where.filename).name}:{where.lineno}" if where else "?"
    return f"{type(error).__name__}@{place}"


def write_vector(directory: Path, target: str, episode: list[bytes]) -> Path:
    text = "".join(data.hex() + "\n" for data in episode)
    name = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = directory / target.replace(":", "_") / f"{name}{VECTOR_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def read_vector(path: Path) -> list[bytes]:
    return [bytes.fromhex(line) for line in path.read_text().split()]


def replay_vector(target: Target, episode: list[bytes], seed: int = 0) -> None:
    """Feed an episode to a fresh driver; raises what the driver lets escape, except the
    target's allowed errors."""
    driver = target.driver(random.Random(seed))
    for data in episode:
        with contextlib.suppress(*target.allowed):
            driver.feed(data)


def run_campaign(target: Target, inputs: int, seed: int, *, vectors: Path | None = None,
                 deadline_s: float | None = None,
                 progress: Callable[[CampaignResult], None] | None = None) -> CampaignResult:
    """Feed `inputs` generated inputs (or stop at `deadline_s` seconds); findings are saved in
    `vectors` when given. The same target, inputs and seed generate the same inputs."""
    rng = random.Random(seed)
    result = CampaignResult(target.name, 0, 0.0)
    start = time.perf_counter()
    episode: list[bytes] = []
    driver_seed = rng.getrandbits(32)
    driver = target.driver(random.Random(driver_seed))
    allowed = target.allowed
    for index in range(inputs):
        if index % target.episode == 0 and index:
            driver_seed = rng.getrandbits(32)
            driver = target.driver(random.Random(driver_seed))
            episode = []
            if deadline_s is not None and time.perf_counter() - start > deadline_s:
                break
        if progress is not None and index and index % PROGRESS_EVERY == 0:
            result.seconds = time.perf_counter() - start
            progress(result)
        data = target.generate(rng)
        episode.append(data)
        result.inputs += 1
        try:
            driver.feed(data)
        except allowed as error:
            result.escaped[type(error).__name__] += 1
        except Exception as error:
            key = signature(error)
            known = result.findings.get(key)
            if known is not None:
                known.count += 1
            else:
                path = write_vector(vectors, target.name, episode) if vectors else None
                message = f"{type(error).__name__}: {error}"[:300]
                result.findings[key] = Finding(key, message, path)
            driver_seed = rng.getrandbits(32)  # its state may be broken: start afresh
            driver = target.driver(random.Random(driver_seed))
            episode = []
    result.seconds = time.perf_counter() - start
    return result
