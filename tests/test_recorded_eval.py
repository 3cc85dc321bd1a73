"""Evaluating recorded rollouts: labels by order of trust, the judge, the statistics and the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from configs import ConfigError, load_config
from data.success_labels import Label, LabelsError, read_labels, set_label, write_labels
from policies.evaluation import judging
from policies.evaluation.recorded import RecordingError, evaluate_recordings, remake_report
from policies.evaluation.stats import fisher_exact, newcombe_interval, trials_to_separate, wilson_interval
from tests.fixtures.annotate import make_dataset_with_columns

# ------------------------------------------------------------------------------------------------- stats


def test_fisher_exact_matches_scipy_on_many_tables():
    from scipy.stats import fisher_exact as scipy_fisher

    rng = np.random.default_rng(0)
    for _ in range(200):
        n1, n2 = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        k1, k2 = int(rng.integers(0, n1 + 1)), int(rng.integers(0, n2 + 1))
        want = scipy_fisher([[k1, n1 - k1], [k2, n2 - k2]], alternative="two-sided")[1]
        assert fisher_exact(k1, n1, k2, n2) == pytest.approx(want, rel=1e-9, abs=1e-12), (k1, n1, k2, n2)


def test_fisher_exact_by_hand():
    # 3/3 vs 0/3: the table [[3,0],[0,3]] and its mirror are the two least likely of the 4 with these margins,
    # each with probability 1/C(6,3) = 1/20, so p = 0.1 (and the test cannot separate 3 trials each)
    assert fisher_exact(3, 3, 0, 3) == pytest.approx(0.1)
    assert fisher_exact(5, 10, 5, 10) == pytest.approx(1.0)


def test_newcombe_interval_reproduces_the_published_example():
    # Newcombe (1998), Table II, example (a): 56/70 vs 48/80, method 10 → 0.0524 to 0.3339
    lo, hi = newcombe_interval(56, 70, 48, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    # negative control: the Wald interval of the same data is not this one
    p1, p2 = 56 / 70, 48 / 80
    wald = 1.959963984540054 * math.sqrt(p1 * (1 - p1) / 70 + p2 * (1 - p2) / 80)
    assert abs((p1 - p2 - wald) - lo) > 0.005


def test_trials_to_separate_textbook_value():
    assert trials_to_separate(0.5, 0.7) == 93  # the classic 50% vs 70%, α = 0.05, power 0.8
    assert trials_to_separate(0.6, 0.6) is None
    assert trials_to_separate(0.1, 0.9) < trials_to_separate(0.4, 0.6)


# ------------------------------------------------------------------------------------------------ judging


def test_fit_threshold_and_leave_one_out():
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1], bool)
    assert judging.fit_threshold(s, y) == pytest.approx(0.5)
    assert judging.leave_one_out_accuracy(s, y) == 1.0
    y2 = np.array([0, 0, 1, 0, 1, 1], bool)  # one swap: no cut is perfect
    t = judging.fit_threshold(s, y2)
    assert np.mean((s > t) == y2) == pytest.approx(5 / 6)
    assert judging.leave_one_out_accuracy(s, y2) < 5 / 6  # held out, the swapped pair is always misjudged
    assert judging.fit_threshold(s, np.ones(6, bool)) is None
    assert judging.auroc(s, y) == 1.0 and judging.auroc(s, y2) == pytest.approx(8 / 9)


def test_resolve_order_of_trust():
    assert judging.resolve(False, True, True) == (False, "human")
    assert judging.resolve(None, True, False) == (True, "column")
    assert judging.resolve(None, None, False) == (False, "judge")
    assert judging.resolve(None, None, None) == (None, "none")


# ------------------------------------------------------------------------------------------------- labels


def test_labels_round_trip_and_errors(tmp_path):
    path = tmp_path / "labels.csv"
    write_labels(path, {("a", 3): Label(True, "clean grasp"), ("b", 0): Label(False)})
    assert read_labels(path) == {("a", 3): Label(True, "clean grasp"), ("b", 0): Label(False)}
    set_label(path, "b", 1, True)
    set_label(path, "a", 3, None)
    assert read_labels(path) == {("b", 0): Label(False), ("b", 1): Label(True)}
    j = tmp_path / "labels.json"
    j.write_text(json.dumps([{"policy": "a", "episode_index": 1, "success": "yes"},
                             {"policy": "a", "episode_index": 2, "success": ""}]))
    assert read_labels(j) == {("a", 1): Label(True)}  # an empty success is "not labelled yet"
    (tmp_path / "bad.csv").write_text("policy,episode_index,success\na,1,maybe\n")
    with pytest.raises(LabelsError, match=r"line 2: success='maybe'"):
        read_labels(tmp_path / "bad.csv")
    (tmp_path / "twice.csv").write_text("policy,episode_index,success\na,1,1\na,1,0\n")
    with pytest.raises(LabelsError, match="both success and failure"):
        read_labels(tmp_path / "twice.csv")
    (tmp_path / "header.csv").write_text("name,episode,ok\n")
    with pytest.raises(LabelsError, match="lacks"):
        read_labels(tmp_path / "header.csv")


# --------------------------------------------------------------------------------------- whole evaluation

SUCCESS = {"good": [1, 1, 1, 1, 1, 0], "weak": [1, 0, 0, 0, 0, 0]}
# the judge's signal: the episode's final score; high for successes except one it gets wrong per policy
JUDGE_FINAL = {"good": [2.0, 1.5, 1.8, 2.2, -1.0, -1.5], "weak": [1.9, -2.0, -1.2, -0.8, 1.2, -1.7]}


def _recording(root, policy):
    def columns(ep, arrays):
        n = len(arrays["next.reward"])
        ok = SUCCESS[policy][ep]
        success = np.zeros(n)
        if ok:
            success[n // 2:] = 1.0
        return {"next.success": success, "judge_signal": np.linspace(0.0, JUDGE_FINAL[policy][ep], n)}

    return make_dataset_with_columns(root, columns, episodes=6, length=12, fps=4, image_size=(32, 32))


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    base = tmp_path_factory.mktemp("recordings")
    return {p: _recording(base / p, p) for p in SUCCESS}


def _cfg(recordings, out, *extra):
    return load_config("evaluate", ["reward=column", "reward.column=judge_signal",
                                    f"recordings=[{recordings['good']},{recordings['weak']}]", f"out={out}",
                                    *extra])


def test_success_column_counts_and_pair_test(recordings, tmp_path):
    from scipy.stats import fisher_exact as scipy_fisher

    report = evaluate_recordings(_cfg(recordings, tmp_path / "ev"), progress=False)
    good, weak = report["policies"]["good"], report["policies"]["weak"]
    assert (good["successes"], good["episodes"], weak["successes"], weak["episodes"]) == (5, 6, 1, 6)
    assert good["sources"] == {"human": 0, "column": 6, "judge": 0, "none": 0}
    assert (good["ci_low"], good["ci_high"]) == pytest.approx(wilson_interval(5, 6))
    pair = report["pairs"][0]
    assert (pair["a"], pair["b"]) == ("good", "weak")
    assert pair["difference"] == pytest.approx(4 / 6)
    assert pair["p_value"] == pytest.approx(scipy_fisher([[5, 1], [1, 5]])[1])
    assert (pair["ci_low"], pair["ci_high"]) == pytest.approx(newcombe_interval(5, 6, 1, 6))
    # time to success: the column turns true at frame 6 of 12 at 4 fps
    assert good["time_to_success_s"]["median"] == pytest.approx(1.5)
    # p = 0.08 with 6 trials each: underpowered, and it says how many would do
    assert pair["p_value"] > 0.05 and pair["trials_needed_per_policy"] == trials_to_separate(5 / 6, 1 / 6)
    out = tmp_path / "ev"
    for name in ("report.md", "report.json", "figures/success_rates.png", "figures/progress_by_policy.png",
                 "figures/episodes_000.png", "videos/good/episode_000000.mp4", "thumbnails/weak/episode_000005.png"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "| good | 5/6 = 83%" in md and "Fisher's exact test" in md
    assert "SIMULATED judge" not in md  # a column reward is not the simulator (tests/test_vlm_errors.py has it)
    # the same command again is the same run: nothing rescored, the same report
    again = evaluate_recordings(_cfg(recordings, tmp_path / "ev"), progress=False)
    assert again["policies"] == report["policies"]


def test_human_labels_for_half_and_the_fitted_judge_for_the_rest(recordings, tmp_path):
    out = tmp_path / "ev"
    labels = tmp_path / "labels.csv"
    # a person labels episodes 0..2 of each policy (their true outcomes) and the column is hidden
    write_labels(labels, {(p, e): Label(bool(SUCCESS[p][e])) for p in SUCCESS for e in range(3)})
    report = evaluate_recordings(_cfg(recordings, out, "success_column=null", f"labels={labels}"), progress=False)
    eps = json.loads((out / "episodes.json").read_text())["episodes"]
    src = {(e["policy"], e["episode_index"]): e["source"] for e in eps}
    assert all(src[(p, e)] == ("human" if e < 3 else "judge") for p in SUCCESS for e in range(6))
    j = report["judge"]
    assert j["fitted_on"] == "human" and j["fitted_episodes"] == 6
    # the human-labelled episodes (successes: good 0-2, weak 0; failures: weak 1, 2) fit the cut; the success
    # score is the mean of the judge signal's last prefixes, so in the order of the signal's final values
    score = {(e["policy"], e["episode_index"]): e["judge"]["score"] for e in eps}
    human = [(p, e) for p in SUCCESS for e in range(3)]
    assert j["threshold"] == pytest.approx(judging.fit_threshold(
        np.array([score[k] for k in human]), np.array([SUCCESS[p][e] for p, e in human], bool)))
    assert max(score[("weak", 1)], score[("weak", 2)]) < j["threshold"] < score[("good", 1)]
    called = {(e["policy"], e["episode_index"]): e["label"] for e in eps if e["source"] == "judge"}
    want = {(p, e): score[(p, e)] > j["threshold"] for p in SUCCESS for e in range(3, 6)}
    assert called == want
    # the judge errs where its signal does: good/4 succeeded but scores -1.0, weak/4 failed but scores 1.2
    assert called[("good", 4)] is False and called[("weak", 4)] is True
    assert report["policies"]["good"]["successes"] == 3 + 1  # 3 human + (good/3 called success)
    assert report["policies"]["good"]["sources"] == {"human": 3, "column": 0, "judge": 3, "none": 0}
    assert report["policies"]["good"]["by_source"] == {"human": {"successes": 3, "episodes": 3},
                                                       "column": {"successes": 0, "episodes": 0},
                                                       "judge": {"successes": 1, "episodes": 3}}
    assert any("labelled by the judge alone" in w for w in report["warnings"])
    assert j["agreement_with_human"]["accuracy"] == 1.0 and j["cv_accuracy"] is not None
    # relabelling needs no rescoring: a label for good/4 turns its judge call into a person's
    set_label(labels, "good", 4, True)
    again = remake_report(out, progress=False)
    assert again["policies"]["good"]["successes"] == 5
    assert again["policies"]["good"]["sources"]["human"] == 4


def test_unlabelled_episodes_are_not_failures(recordings, tmp_path):
    report = evaluate_recordings(_cfg(recordings, tmp_path / "ev", "success_column=null", "judge.enabled=false"),
                                 progress=False)
    good = report["policies"]["good"]
    assert (good["episodes"], good["unlabelled"], good["success_rate"]) == (0, 6, None)
    assert any("counted as unlabelled, not as failures" in w for w in report["warnings"])
    assert report["pairs"][0]["p_value"] is None


def test_labels_for_missing_episodes_warn_and_count_nothing(recordings, tmp_path):
    labels = tmp_path / "labels.csv"
    write_labels(labels, {("good", 0): Label(False), ("good", 99): Label(True), ("nobody", 1): Label(True)})
    report = evaluate_recordings(_cfg(recordings, tmp_path / "ev", f"labels={labels}"), progress=False)
    assert report["policies"]["good"]["successes"] == 4  # good/0 relabelled failure by the person; 99 ignored
    (warning,) = [w for w in report["warnings"] if "not in the recordings" in w]
    assert "good/99" in warning and "nobody/1" in warning


def test_bad_recordings_are_refused_clearly(recordings, tmp_path):
    with pytest.raises(RecordingError, match="both name policy 'x'"):
        evaluate_recordings(_cfg(recordings, tmp_path / "a", "names=[x,x]"), progress=False)
    assert not (tmp_path / "a").exists()  # nothing written before the refusal
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = tmp_path / "novideo"
    ds = LeRobotDataset.create("local/novideo", fps=4, root=root, use_videos=True,
                               features={"action": {"dtype": "float32", "shape": (2,), "names": None}})
    for _ in range(3):
        ds.add_frame({"action": np.zeros(2, np.float32), "task": "t"})
    ds.save_episode(parallel_encoding=False)
    ds.finalize()
    cfg = load_config("evaluate", ["reward=column", "reward.column=judge_signal", f"recordings=[{root}]",
                                   f"out={tmp_path / 'b'}"])
    with pytest.raises(RecordingError, match="has no camera"):
        evaluate_recordings(cfg, progress=False)


def test_matched_pairs_sequential_verdict_and_partial_credit(recordings, tmp_path):
    from scipy.stats import ttest_rel

    from policies.evaluation.recorded_report import credit
    from policies.evaluation.stats import CONTINUE, mcnemar_exact

    out = tmp_path / "ev"
    report = evaluate_recordings(_cfg(recordings, out, "pairs=matched", "match_by=episode_index"), progress=False)
    pair = report["pairs"][0]
    # good [1,1,1,1,1,0] beside weak [1,0,0,0,0,0], episode by episode: 1 both, 4 good only, 0 weak only, 1 neither
    q = pair["paired"]
    assert (q["pairs"], q["both"], q["a_only"], q["b_only"], q["neither"]) == (6, 1, 4, 0, 1)
    assert q["p_value"] == pytest.approx(2 / 16) == pytest.approx(mcnemar_exact(4, 0))
    assert pair["analysis"].startswith("matched pairs (matched by episode_index)")
    assert pair["p_value"] == pytest.approx(fisher_exact(5, 6, 1, 6))  # the fixed-sample report stays
    # 4 discordant pairs are too few for the sequential test (9 are needed at these settings)
    seq = pair["sequential"]
    assert seq["decision"] == CONTINUE and seq["verdict"].startswith("continue: about")
    assert 0 < seq["more_trials_per_policy"] <= 100 - 6
    # partial credit: successes count 1.0, a failure its final progress; the paired t-interval beside
    eps = json.loads((out / "episodes.json").read_text())["episodes"]
    by = {(e["policy"], e["episode_index"]): e for e in eps}
    ca = [credit(by[("good", i)], "final") for i in range(6)]
    cb = [credit(by[("weak", i)], "final") for i in range(6)]
    assert ca[0] == 1.0 and cb[1] == pytest.approx(max(0.0, min(1.0, by[("weak", 1)]["progress"][-1])))
    pc = pair["partial_credit"]
    ci = ttest_rel(ca, cb).confidence_interval(0.95)
    assert (pc["difference"], pc["ci_low"], pc["ci_high"]) == pytest.approx((np.mean(ca) - np.mean(cb), ci.low,
                                                                              ci.high))
    md = (out / "report.md").read_text()
    assert "## Sequential decision" in md and "## Matched pairs" in md and "## Partial credit" in md
    # unpaired (the default): no McNemar row, Welch's interval
    report = evaluate_recordings(_cfg(recordings, out), progress=False)
    assert "paired" not in report["pairs"][0] and report["pairs"][0]["partial_credit"]["test"] == "Welch t"
    assert report["pairs"][0]["analysis"].startswith("unpaired")
    with pytest.raises(RecordingError, match="pairs='twice'"):
        evaluate_recordings(_cfg(recordings, out, "pairs=twice"), progress=False)
    # these recordings carry no seeds: matching by seed is refused, naming the way out
    with pytest.raises(ConfigError, match="match_by=episode_index"):
        evaluate_recordings(_cfg(recordings, out, "pairs=matched"), progress=False)


def test_recordings_checked_against_the_plan(recordings, tmp_path):
    from policies.evaluation.plan import PlanError, make_plan, write_plan

    ok = write_plan(tmp_path / "plan.csv", make_plan(["good", "weak"], 6, 1))
    report = evaluate_recordings(_cfg(recordings, tmp_path / "ev", f"plan={ok}"), progress=False)
    assert report["plan"] == {"file": str(ok), "seed": 1, "runs": 12}
    short = write_plan(tmp_path / "short.csv", make_plan(["good", "weak"], 5, 1))
    with pytest.raises(PlanError, match=r"recording of 'good' holds 6 trials; plan=.*short.csv plans 5"):
        evaluate_recordings(_cfg(recordings, tmp_path / "ev2", f"plan={short}"), progress=False)
    other = write_plan(tmp_path / "other.csv", make_plan(["good", "plain"], 6, 1))
    with pytest.raises(PlanError, match=r"not planned: \['weak'\]"):
        evaluate_recordings(_cfg(recordings, tmp_path / "ev3", f"plan={other}"), progress=False)
    assert not (tmp_path / "ev2").exists() and not (tmp_path / "ev3").exists()


# ------------------------------------------------------------------ simulator recordings, evaluated as if real


def _hand_fisher(k1: int, n1: int, k2: int, n2: int) -> float:
    """Fisher's two-sided p by hand: the hypergeometric probabilities of every table with the observed margins,
    summed over those no more likely than the observed one."""
    k, n = k1 + k2, n1 + n2
    probs = {x: math.comb(n1, x) * math.comb(n2, k - x) / math.comb(n, k) for x in range(max(0, k - n2), min(k, n1) + 1)}
    return sum(p for p in probs.values() if p <= probs[k1] * (1 + 1e-9))


def test_simulator_recordings_evaluated_as_if_real(tmp_path):
    import policies.evaluation as ev

    runs = {}
    for name, policy, n, steps in (("expert", "expert", 6, 60), ("random", "random", 4, 40)):
        out = tmp_path / name
        assert ev.main([f"policy={policy}", f"out={out}", f"episodes={n}", f"max_steps={steps}", "videos=0",
                        "env.image_size=[32,32]", "record=true"]) == 0
        runs[name] = json.loads((out / "eval.json").read_text())
    recs = [str(tmp_path / name / runs[name]["recording"]) for name in runs]
    judge = ["reward=column", "reward.column=next.reward"]  # the judge: the simulator's dense reward, scored
    # 1. the success column: the simulator's own counts
    with_column = evaluate_recordings(load_config("evaluate", [*judge, f"recordings=[{','.join(recs)}]",
                                                               f"out={tmp_path / 'ev1'}"]), progress=False)
    for name, run in runs.items():
        got = with_column["policies"][name]
        assert (got["successes"], got["episodes"]) == (run["successes"], run["episodes"])
        assert got["sources"]["column"] == run["episodes"]
    assert runs["expert"]["successes"] >= 1 and runs["random"]["successes"] == 0  # the comparison is not vacuous
    # 2. the column hidden, a person's labels for half the episodes (the simulator's truth), the judge the rest
    labels = tmp_path / "labels.csv"
    truth = {(name, i): bool(e["success"]) for name, run in runs.items() for i, e in enumerate(run["per_episode"])}
    half = {k: Label(v) for k, v in truth.items() if k[1] < len(runs[k[0]]["per_episode"]) // 2}
    write_labels(labels, half)
    rep = evaluate_recordings(load_config("evaluate", [*judge, f"recordings=[{','.join(recs)}]", "success_column=null",
                                                       f"labels={labels}", f"out={tmp_path / 'ev2'}"]), progress=False)
    eps = json.loads((tmp_path / "ev2" / "episodes.json").read_text())["episodes"]
    for e in eps:
        key = (e["policy"], e["episode_index"])
        assert e["source"] == ("human" if key in half else "judge"), key
        if key in half:
            assert e["label"] == truth[key]
    assert rep["judge"]["fitted_on"] == "human" and rep["judge"]["fitted_episodes"] == len(half)
    # 3. the pair's exact test reproduces the hand computation on the counts the report gives
    pe, pr = rep["policies"]["expert"], rep["policies"]["random"]
    pair = rep["pairs"][0]
    assert pair["p_value"] == pytest.approx(_hand_fisher(pe["successes"], pe["episodes"], pr["successes"], pr["episodes"]))
    assert pair["test"] == "Fisher's exact test (two-sided)"


def test_review_server_labels_and_remakes_the_real_report(recordings, tmp_path):
    """The review page's endpoints on a real evaluation folder: a label posted lands in the labels file and the
    re-made report counts it (the page itself is driven in a browser in tests/test_review.py)."""
    import threading
    import urllib.request

    from policies.evaluation.review import make_server

    out = tmp_path / "ev"
    first = evaluate_recordings(_cfg(recordings, out), progress=False)
    assert first["policies"]["weak"]["successes"] == 1
    server = make_server(out, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        def post(path, body):
            req = urllib.request.Request(server.url.rstrip("/") + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req) as r:
                return json.loads(r.read())

        post("/api/label", {"policy": "weak", "episode_index": 3, "success": True, "note": "pushed it in late"})
        assert read_labels(out / "labels.csv") == {("weak", 3): Label(True, "pushed it in late")}
        summary = post("/api/report", {})
    finally:
        server.shutdown()
        server.server_close()
    assert summary["policies"]["weak"]["successes"] == 2  # the column said failure; the person's label wins
    report = json.loads((out / "report.json").read_text())
    assert report["policies"]["weak"]["sources"] == {"human": 1, "column": 5, "judge": 0, "none": 0}


def test_simulator_recording_follows_the_plan(tmp_path):
    import policies.evaluation as ev
    from policies.evaluation.plan import PlanError, make_plan, write_plan
    from policies.evaluation.recording import recording_info

    plan = write_plan(tmp_path / "plan.csv", make_plan(["a", "b"], 2, 3))
    recs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert ev.main(["policy=random", f"out={out}", "episodes=9", "max_steps=8", "videos=0",
                        "env.image_size=[32,32]", "record=true", f"record_name={name}", f"plan={plan}"]) == 0
        assert json.loads((out / "eval.json").read_text())["episodes"] == 2  # the plan's, not episodes=9
        assert recording_info(out / "recording")["plan"] == {"file": "plan.csv", "seed": 3}
        recs.append(str(out / "recording"))
    judge = ["reward=column", "reward.column=next.reward"]
    report = evaluate_recordings(load_config("evaluate", [*judge, f"recordings=[{','.join(recs)}]", f"plan={plan}",
                                                          "pairs=matched", f"out={tmp_path / 'ev'}"]),
                                 progress=False)
    assert report["pairs"][0]["paired"]["pairs"] == 2 and report["pairs"][0]["analysis"].endswith(
        "(two-sided binomial test of the discordant pairs at 1/2)")  # matched by the recordings' seeds
    other = write_plan(tmp_path / "other.csv", make_plan(["a", "b"], 2, 4))
    with pytest.raises(PlanError, match="followed a plan of seed 3"):
        evaluate_recordings(load_config("evaluate", [*judge, f"recordings=[{','.join(recs)}]", f"plan={other}",
                                                     f"out={tmp_path / 'ev2'}"]), progress=False)
    assert ev.main(["policy=random", f"out={tmp_path / 'c'}", "record=true", "record_name=c", f"plan={plan}"]) == 2
