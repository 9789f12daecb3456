"""Escalation comparison on the test split: the learned policy vs a keyword baseline vs the base model zero-shot;
then the same systems on the independent challenge set (``escalation/challenge.jsonl``, evaluation only).

    .venv/bin/python benchmarks/escalation_compare.py        # writes docs/benchmarks/escalation.md
    .venv/bin/python benchmarks/escalation_compare.py --also git:bbe5e12 --also git:178cbff --also git:a76989b
        # + the model files of versions 2, 3 and 4 as committed, scored by this code

The keyword baseline is the comparison, not the policy: regular expressions per text trigger (written once from the
labelling guideline in the dataset card, not tuned on any split), the injury rule applied by line, and the same
exact authority limits. Both systems get identical structured triggers, so the difference is the text.
The zero-shot row asks the pack's base model (``Settings().base_model_path``, any causal LM folder) one yes/no
question per text trigger, with the guideline's wording of that trigger in the prompt, and names the trigger when
the answer " yes" is more likely than " no" (sequence log-likelihood, no threshold tuned on any split); the
structured limits are applied exactly, as for the other rows.
Latency is per decision, one at a time, torch on ``BENCH_TORCH_THREADS`` threads (default 1).
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "escalation.md"
TEXT_TRIGGERS = ("legal", "injury", "misstatement", "dispute", "asks_person", "vulnerability")

KEYWORDS = {
    "legal": r"\b(lawyer|attorney|counsel|law firm|sue|suing|sued|lawsuit|court|litigat\w*|ombudsman|regulator|"
             r"commissioner|legal action)\b",
    "injury": r"\b(injur\w*|hurt|broke (his|her|my|their) \w+|broken (arm|leg|wrist|rib\w*)|fractur\w*|concussion|"
              r"whiplash|bleeding|stitches|hospitali[sz]ed|ambulance|emergency room|\ber\b|died|killed|dead|"
              r"burn(ed|s)? (my|his|her))\b",
    "misstatement": r"\b(say (it|that)|pretend|backdate|change the date|(don'?t|not) mention|leave out|hide|lie|fake|"
                    r"alter|make it look|what (should|do) i (say|write))\b",
    "dispute": r"\b(disput\w*|contest\w*|appeal\w*|disagree\w*|unfair|lowball\w*|wrong(ly)?|not accept|reject\w*)\b",
    "asks_person": r"\b(human|real person|a person|representative|supervisor|manager|"
                   r"speak (to|with) (someone|an agent)|talk to (someone|a person|an agent)|call me|agent)\b",
    "vulnerability": r"\b(suicid\w*|kill myself|self[- ]harm|hopeless|can'?t go on|scared|terrified|crisis|"
                     r"passed away|died|funeral|grieving|homeless|nowhere (else )?to (go|stay)|unsafe|abus\w*|"
                     r"violent|desperate|breaking point|not okay)\b",
}


class KeywordPolicy:
    """The baseline: keyword regexes per text trigger plus the exact structured limits."""

    def __init__(self, limits):
        self.limits = limits
        self.patterns = {k: re.compile(v, re.IGNORECASE) for k, v in KEYWORDS.items()}

    def decide(self, query: str, claim):
        from domainroute.agents.escalation import structured_triggers
        from domainroute.schemas import Claim, EscalationDecision

        claim = Claim.model_validate(claim) if isinstance(claim, dict) else claim
        reasons = {t for t, p in self.patterns.items() if p.search(query)}
        if claim is not None and claim.line == "health":
            reasons.discard("injury")
        reasons |= set(structured_triggers(claim, self.limits))
        return EscalationDecision(escalate=bool(reasons), score=1.0 if reasons else 0.0, reasons=sorted(reasons))


ZERO_SHOT_QUESTIONS = {
    "legal": "Does the customer mention a lawyer, attorney, law firm, a lawsuit, court, or a complaint to a regulator?",
    "injury": "Is someone injured or killed in connection with a car or home claim?",
    "misstatement": "Does the customer ask to misstate facts, such as changing a date or altering a receipt?",
    "dispute": "Does the customer appeal or contest a denial, a valuation, a fault decision or another claim decision?",
    "asks_person": "Does the customer ask for a human, an agent, a supervisor or a manager?",
    "vulnerability": "Does the customer mention a bereavement, acute distress, self-harm, or an unsafe living situation?",
}


class ZeroShotBaseModelPolicy:
    """The base model asked zero-shot, one yes/no question per text trigger, plus the exact structured limits."""

    def __init__(self, model_path: Path, limits):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.limits = limits
        self.name = Path(model_path).name
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype="float32").eval()  # fp16 is slow on CPU
        self.answers = {a: self.tokenizer.encode(a, add_special_tokens=False) for a in (" yes", " no")}

    def _says_yes(self, prompts: list[str]) -> list[bool]:
        import torch

        out = []
        with torch.inference_mode():
            for prompt in prompts:
                scores = {}
                prompt_ids = self.tokenizer.encode(prompt, add_special_tokens=False)
                for answer, ids in self.answers.items():
                    full = torch.tensor([prompt_ids + ids])
                    logp = torch.log_softmax(self.model(full).logits[0, -len(ids) - 1:-1].float(), dim=-1)
                    scores[answer] = float(logp[torch.arange(len(ids)), torch.tensor(ids)].sum())
                out.append(scores[" yes"] > scores[" no"])
        return out

    def decide(self, query: str, claim):
        from domainroute.agents.escalation import structured_triggers
        from domainroute.schemas import Claim, EscalationDecision

        claim = Claim.model_validate(claim) if isinstance(claim, dict) else claim
        prompts = [self.tokenizer.apply_chat_template(
            [{"role": "system", "content": "You help insurance claims handlers decide when to escalate."},
             {"role": "user", "content": f"Customer message: {query}\nQuestion: {question} Answer yes or no."}],
            tokenize=False, add_generation_prompt=True) for question in ZERO_SHOT_QUESTIONS.values()]
        reasons = {t for t, yes in zip(ZERO_SHOT_QUESTIONS, self._says_yes(prompts)) if yes}
        if claim is not None and claim.line == "health":
            reasons.discard("injury")
        reasons |= set(structured_triggers(claim, self.limits))
        return EscalationDecision(escalate=bool(reasons), score=1.0 if reasons else 0.0, reasons=sorted(reasons))


def timed(policy, rows: list[dict]) -> tuple[list, list[float]]:
    if callable(getattr(policy, "warm", None)):
        policy.warm()  # both stages' encoders loaded before any timing
    for r in rows[:5]:
        policy.decide(r["query"], r["claim"])
    decisions, seconds = [], []
    for r in rows:
        t0 = time.perf_counter()
        decisions.append(policy.decide(r["query"], r["claim"]))
        seconds.append(time.perf_counter() - t0)
    return decisions, seconds


def score_table(systems: list, rows: list[dict], limits, *, timed_rows: bool) -> tuple[str, list[dict]]:
    """One row per system: recall, precision, text-only figures, per-trigger recall (and p50/p95 when timed)."""
    from domainroute.agents.escalation import score_decisions

    out = []
    for name, policy in systems:
        if timed_rows:
            decisions, seconds = timed(policy, rows)
        else:
            decisions, seconds = [policy.decide(r["query"], r["claim"]) for r in rows], []
        m = score_decisions(rows, decisions, limits)
        m["p50_ms"] = float(np.percentile(np.asarray(seconds) * 1000, 50)) if seconds else None
        m["p95_ms"] = float(np.percentile(np.asarray(seconds) * 1000, 95)) if seconds else None
        out.append((name, m))
    head = "| system | recall | precision | text-only recall | text-only precision | " + \
           " | ".join(TEXT_TRIGGERS) + (" | p50 ms | p95 ms |" if timed_rows else " |")
    lines = [head, "|---|" + "---:|" * (4 + len(TEXT_TRIGGERS) + (2 if timed_rows else 0))]
    for name, m in out:
        per = " | ".join(f"{m['per_trigger_recall'][t]:.2f} ({m['per_trigger_escalated'][t]:.2f})"
                         for t in TEXT_TRIGGERS)
        latency = f" {m['p50_ms']:.1f} | {m['p95_ms']:.1f} |" if timed_rows else ""
        lines.append(f"| {name} | {m['recall']:.3f} | {m['precision']:.3f} | {m['text_recall']:.3f} | "
                     f"{m['text_precision']:.3f} | {per} |" + latency)
    return "\n".join(lines), [m for _, m in out]


def _model_at(spec: str) -> Path:
    """A model folder, or ``git:COMMIT``: the escalation model as committed at COMMIT, extracted to a temp folder."""
    if not spec.startswith("git:"):
        return Path(spec)
    import atexit
    import io
    import shutil
    import subprocess
    import tarfile
    import tempfile

    rel = "domainroute/packs/insurance/escalation/model"
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", spec[4:], rel], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"--also {spec}: {archive.stderr.decode().strip()}")
    target = Path(tempfile.mkdtemp(prefix="escalation-model-"))
    atexit.register(shutil.rmtree, target, True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target / rel


def main(argv: list[str] | None = None) -> int:
    import argparse

    import torch

    from domainroute.agents.escalation import load_escalation_policy, load_split
    from domainroute.embeddings import default_embedder
    from domainroute.pack import load_pack
    from domainroute.settings import BUNDLED_PACK, Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--also", action="append", default=[], metavar="MODEL_DIR|git:COMMIT",
                        help="another saved escalation model to score in the same run: a folder, or git:COMMIT for "
                             "the model files committed at COMMIT (e.g. git:bbe5e12, version 2), scored by this code")
    args = parser.parse_args(argv)
    threads = int(os.environ.get("BENCH_TORCH_THREADS", "1"))
    torch.set_num_threads(threads)
    pack = load_pack(BUNDLED_PACK)
    limits = pack.escalation.limits
    test = load_split(BUNDLED_PACK, "test")
    challenge_path = BUNDLED_PACK / "escalation" / "challenge.jsonl"
    challenge = [json.loads(line) for line in challenge_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    load_before = os.getloadavg()[0]
    committed_dir = BUNDLED_PACK / "escalation" / "model"
    manifest = json.loads((committed_dir / "manifest.json").read_text(encoding="utf-8"))
    committed = load_escalation_policy(committed_dir, pack)
    systems = [(f"domainroute LearnedEscalationPolicy (committed model, version {manifest.get('version')}"
                + (f"; text-only escalations scored under {committed.cascade_band:.3f} go to the all-mpnet-base-v2 "
                   "stage)" if committed.second is not None else ")"), committed)]
    if committed.second is not None:
        first = copy.copy(committed)
        first.second = None
        systems.append(("its first stage alone (MiniLM + TF-IDF features)", first))
    for extra in args.also:
        extra = _model_at(extra)
        other = json.loads((Path(extra) / "manifest.json").read_text(encoding="utf-8"))
        systems.append((f"LearnedEscalationPolicy version {other.get('version')} ({other.get('created', '')[:10]}, "
                        f"{other.get('data', {}).get('n_train', '?')} training rows)",
                        load_escalation_policy(Path(extra), pack)))
    systems.append(("keyword baseline (regexes + the same limits)", KeywordPolicy(limits)))
    base_path = Settings().base_model_path
    zero_shot = ZeroShotBaseModelPolicy(base_path, limits)
    systems.append((f"base model `{zero_shot.name}` zero-shot (6 yes/no questions + the same limits)", zero_shot))
    test_table, test_metrics = score_table(systems, test, limits, timed_rows=True)
    share = committed.evaluate(test, timed=False).get("second_stage_share", 0.0)
    load_after = os.getloadavg()[0]
    challenge_table, _ = score_table(systems, challenge, limits, timed_rows=False)
    mt, ctx = manifest["test_metrics"], manifest.get("latency_context", {})
    support = ", ".join(f"{t} {test_metrics[0]['per_trigger_support'][t]}" for t in TEXT_TRIGGERS)
    ch_support = ", ".join(f"{t} {sum(t in r['triggers'] for r in challenge)}" for t in TEXT_TRIGGERS)
    doc = "\n".join([
        "# Escalation comparison",
        "",
        f"Generated by `.venv/bin/python benchmarks/escalation_compare.py"
        f"{''.join(' --also ' + a for a in args.also)}` on "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        f"Test split: {len(test)} decisions (`domainroute/packs/insurance/escalation/test.jsonl`), "
        f"{sum(r['escalate'] for r in test)} of them escalated. Trigger support: {support}.",
        "",
        test_table,
        "",
        "Per-trigger cells: share of the trigger's rows where the trigger is *named* in `reasons` (in brackets: share "
        "escalated for any reason). Structured triggers (large_loss, new_policy, frequent_claims, repeat_contact) "
        "are applied exactly by every system and score 1.00. \"Text-only\" counts the rows no structured trigger "
        "covers, where only the text decides.",
        "",
        "## Independent challenge set",
        "",
        f"`domainroute/packs/insurance/escalation/challenge.jsonl`: {len(challenge)} decisions "
        f"({sum(r['escalate'] for r in challenge)} escalated; {ch_support}) written in one pass by another author "
        "for evaluation only, from the guideline, without running any model (card: `escalation/CHALLENGE_CARD.md`); "
        "no model was trained or tuned on it. Chat-style messages, incidents with nobody hurt, routine medical "
        "questions, look-alike words, amounts just under the limits.",
        "",
        challenge_table,
        "",
        f"Latency: one decision at a time, torch threads = {threads}, CPU, on a shared machine (load average "
        f"{load_before:.1f} before, {load_after:.1f} after); the learned policy's time is the encoder forward pass "
        f"(MiniLM on the `{default_embedder().backend}` backend; a decision the second stage takes adds an "
        f"all-mpnet-base-v2 + MiniLM pass: {share:.1%} of the test split "
        "in this run, so the p50 is the first stage's and the p95 may be either), "
        f"the zero-shot row's is 12 forward passes "
        f"of the base model `{zero_shot.name}` (see its manifest). "
        f"The committed model's own measurement (`escalation/model/manifest.json`, at training): p50 "
        f"{mt['p50_ms']:.1f} ms, p95 {mt['p95_ms']:.1f} ms with torch threads = {ctx.get('torch_threads')} at load "
        f"average {ctx.get('load_average_1m')}; test ECE of the head probabilities {mt['ece']:.3f}.",
        "",
    ])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(doc, encoding="utf-8")
    print(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
