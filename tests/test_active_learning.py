"""The active-learning task: initial set, acquisitions, warm start, every method at smoke size."""

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import hyperbayes as hb
from hyperbayes.experiments import active_learning as al
from hyperbayes.experiments import zoo
from hyperbayes.inference import acquisition as acq
from hyperbayes.models.architectures import GalCNN
from tests.common import assert_close

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images():
    """A small 10-class set of 8×8 images: a noisy prototype per class (no MNIST needed)."""
    return _images()


def _images():
    gen = torch.Generator().manual_seed(0)
    prototypes = torch.rand(10, 1, 8, 8, generator=gen)

    def draw(n):
        y = torch.arange(n) % 10
        x = (prototypes[y] + 0.3 * torch.randn(n, 1, 8, 8, generator=gen)).clamp(0, 1)
        return x, y

    x, y = draw(300)
    return hb.datasets.from_tensors(x, y, task="classification", test=draw(100))


def small(**changes) -> al.Settings:
    """Smoke settings on the 8×8 images: pool 60, 30 test images."""
    return replace(al.Settings.smoke(), pool_size=60, test_examples=30, **changes)


def test_initial_set_has_two_per_class_and_the_pool_is_disjoint(images):
    labels = images.train.y
    initial, pool = acq.initial_and_pool(labels, per_class=2, pool_size=50, seed=3)
    assert len(initial) == 20 and len(pool) == 50
    assert torch.bincount(labels[initial], minlength=10).tolist() == [2] * 10
    assert len(set(initial.tolist()) | set(pool.tolist())) == 70  # disjoint, no duplicates
    again = acq.initial_and_pool(labels, per_class=2, pool_size=50, seed=3)
    assert torch.equal(again[0], initial) and torch.equal(again[1], pool)
    other = acq.initial_and_pool(labels, per_class=2, pool_size=50, seed=4)
    assert not torch.equal(other[0], initial)
    everything = acq.initial_and_pool(labels, per_class=2, seed=3)[1]
    assert len(everything) == len(labels) - 20  # no pool_size: every other image
    with pytest.raises(ValueError, match="class 1 has 1 training examples"):
        acq.initial_and_pool(torch.tensor([0, 0, 1, 2, 2]), per_class=2)


def test_select_takes_the_highest_scores_among_the_available():
    gen = torch.Generator().manual_seed(0)
    scores = torch.tensor([0.5, 0.9, 0.1, 0.8, 0.7, 0.95])
    available = torch.tensor([True, True, True, True, True, False])
    assert acq.select(scores, available, 3, gen).tolist() == [1, 3, 4]  # 5 is taken already
    assert acq.select(scores.double(), available, np.int64(3), gen).tolist() == [1, 3, 4]
    # random: seeded, available only, no repeats
    first = acq.select(None, available, 4, torch.Generator().manual_seed(1))
    again = acq.select(None, available, 4, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and 5 not in first.tolist()
    assert len(set(first.tolist())) == 4
    # equal scores (BALD of a point estimate) are ties broken at random, not by position
    picks = {tuple(acq.select(torch.zeros(50), torch.ones(50, dtype=torch.bool), 3,
                             torch.Generator().manual_seed(s)).tolist()) for s in range(5)}
    assert len(picks) > 1
    with pytest.raises(ValueError, match="cannot acquire 6 items from a pool of 5"):
        acq.select(scores, available, 6, gen)


@pytest.mark.parametrize("call, match", [
    (lambda: acq.initial_and_pool(torch.tensor([0.0, 1.0])), "class indices"),
    (lambda: acq.initial_and_pool(torch.tensor([0, 1]), per_class=0), "per_class"),
    (lambda: acq.initial_and_pool(torch.tensor([0, 1]), per_class=1, pool_size=-1), "pool_size"),
    (lambda: acq.select(torch.zeros(3), torch.ones(4, dtype=torch.bool), 1,
                        torch.Generator()), "one score per pool item"),
    (lambda: acq.select(None, torch.ones(4), 1, torch.Generator()), "boolean"),
    (lambda: acq.select(None, torch.ones(4, dtype=torch.bool), -1, torch.Generator()), "k must"),
    (lambda: acq.random_subset(torch.ones(4, dtype=torch.bool), 2.5, torch.Generator()), "size"),
    (lambda: acq.area_under_curve([0, 10], [0.5]), "as many accuracies"),
    (lambda: acq.area_under_curve([10, 0], [0.5, 0.6]), "must not decrease"),
])
def test_acquisition_refuses_bad_input_naming_it(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_each_round_acquires_the_best_of_a_fresh_random_pool_subset(images, monkeypatch):
    settings = small(rounds=3, pool_subset=15)
    initial, pool = acq.initial_and_pool(images.train.y, pool_size=60, seed=0)
    stub = torch.randn(len(pool), generator=torch.Generator().manual_seed(7))
    monkeypatch.setitem(al.ACQUISITIONS, "bald", lambda probs: stub)
    subsets = []
    draw = al.random_subset

    def recording(available, size, generator):
        mask = draw(available, size, generator)
        subsets.append((available.clone(), mask))
        return mask

    monkeypatch.setattr(al, "random_subset", recording)
    curve = al.learning_curve("map", "bald", "warm", settings, images.train,
                              images.test.subset(slice(0, 30)), initial, pool, seed=0,
                              device="cpu", progress=False)
    assert len(subsets) == 4  # round 1's candidates, then one per trained round
    for (available, mask), picked in zip(subsets, curve["indices"], strict=False):
        assert int(mask.sum()) == 15 and bool((mask <= available).all())  # available items only
        positions = mask.nonzero().squeeze(1)
        best = positions[stub[positions].argsort(descending=True)[:10]]
        assert sorted(picked.tolist()) == sorted(pool[best].tolist())
    assert len({tuple(m.nonzero().squeeze(1).tolist()) for _, m in subsets}) == 4  # fresh each


@pytest.mark.parametrize("regime", ["warm", "reinit"])
def test_an_interrupted_curve_resumes_at_its_next_round_as_if_never_stopped(images, tmp_path,
                                                                             regime):
    initial, pool = acq.initial_and_pool(images.train.y, pool_size=60, seed=0)
    test = images.test.subset(slice(0, 30))

    def curve(rounds, state=None):
        return al.learning_curve("meanfield", "bald", regime, small(rounds=rounds), images.train,
                                 test, initial, pool, seed=0, device="cpu", progress=False,
                                 state=state)

    straight = curve(3)
    state = tmp_path / f"bald-{regime}.pt"
    curve(2, state)  # stopped after round 2: its state is on disk
    assert hb.inference.checkpoint.load(state)["round"] == 2
    resumed = curve(3, state)
    assert resumed["accuracy"] == straight["accuracy"]
    assert [i.tolist() for i in resumed["indices"]] == [i.tolist() for i in straight["indices"]]
    assert torch.equal(resumed["labelled_indices"], straight["labelled_indices"])
    with pytest.raises(hb.inference.checkpoint.CheckpointError, match="delete it to restart"):
        al.learning_curve("meanfield", "random", regime, small(rounds=3), images.train, test,
                          initial, pool, seed=0, device="cpu", progress=False, state=state)


def _resume_curve(state, rounds: int) -> dict:
    images = _images()
    initial, pool = acq.initial_and_pool(images.train.y, pool_size=60, seed=0)
    curve = al.learning_curve("map", "random", "warm", small(rounds=rounds), images.train,
                              images.test.subset(slice(0, 30)), initial, pool, seed=0,
                              device="cpu", progress=False, state=state)
    return {"accuracy": curve["accuracy"], "steps": curve["steps"],
            "indices": [i.tolist() for i in curve["indices"]]}


def _resume_worker(out: str) -> None:
    """One of two ranks resuming a curve: rank 0's state file exists, rank 1's path has none
    (an experiment's other ranks keep theirs in a temporary folder)."""
    from hyperbayes.inference import distributed

    state = Path(out) / ("state.pt" if distributed.is_main() else "elsewhere/state.pt")
    result = _resume_curve(state, rounds=2)
    (Path(out) / f"rank{distributed.rank()}.json").write_text(json.dumps(result))


def test_two_processes_resume_a_curve_from_rank_0s_state(tmp_path):
    """Under torchrun every rank resumes where rank 0's state says (rank0_decides); a rank
    that started afresh would train other rounds than the others and wait for them forever."""
    from hyperbayes.inference import distributed

    interrupted = _resume_curve(tmp_path / "state.pt", rounds=1)
    distributed.launch_local(_resume_worker, 2, str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert len(ranks[0]["accuracy"]) == 3  # rounds 0-2
    for key in ("accuracy", "steps"):  # rounds 0 and 1 read back from rank 0's state
        assert ranks[0][key][:2] == interrupted[key]
    assert ranks[0]["indices"][:1] == interrupted["indices"]


def test_a_resumed_run_reuses_the_first_model_and_its_curves_are_unchanged(images, tmp_path,
                                                                           monkeypatch, caplog):
    """The model trained on the initial set is kept beside the curves' states: a resumed run
    neither trains nor scores it again, and every curve is the same as without the file."""
    initial, pool = acq.initial_and_pool(images.train.y, pool_size=60, seed=0)
    test = images.test.subset(slice(0, 30))
    candidates = torch.cat([images.train.x[pool], test.x])
    settings = small(rounds=2, acquisitions=("bald",))

    def part(state_dir):
        return al._method_seed("meanfield", settings, images.train, test, initial, pool,
                               candidates, seed=0, device="cpu", progress=False,
                               num_classes=10, state_dir=state_dir)

    straight = part(None)
    first = part(tmp_path / "a")
    assert (tmp_path / "a" / "start.pt").exists()
    for curve_state in (tmp_path / "a").glob("bald-*.pt"):
        curve_state.unlink()  # the curves start again; the first model is kept
    trainings = []
    real_train = al._train
    monkeypatch.setattr(al, "_train", lambda *a, **k: trainings.append(k.get("warm_start"))
                        or real_train(*a, **k))
    with caplog.at_level("INFO", logger="hyperbayes"):
        again = part(tmp_path / "a")
    assert len(trainings) == 2 * settings.rounds  # the rounds only, not the first model
    assert "reused from" in caplog.text and "round 2 of 2" in caplog.text
    assert again["curves"] == first["curves"] == straight["curves"]
    with pytest.raises(hb.inference.checkpoint.CheckpointError, match="delete it to train"):
        al._method_seed("meanfield", settings, images.train, test, initial, pool, candidates,
                        seed=1, device="cpu", progress=False, num_classes=10,
                        state_dir=tmp_path / "a")


def test_metaprior_is_left_out_with_its_reason(images, tmp_path):
    result = al.run(["metaprior", "map"], settings=small(rounds=1), device="cpu", out=tmp_path,
                    progress=False, data=images, checkpoints=tmp_path / "parts")
    assert list(result.metrics["methods"]) == ["map"]
    assert "early stopping" in result.metrics["excluded"]["metaprior"]
    assert "Left out: `metaprior`" in (tmp_path / "report.md").read_text()
    parts = tmp_path / "parts" / "active-learning"
    assert len(list(parts.glob("map-seed0-*.json"))) == 1
    assert not list(parts.glob("*.rounds"))  # per-round states go once the part is written


def test_the_paper_protocol_runs_mc_dropout_and_the_flow_on_gal_cnn(images, tmp_path):
    settings = replace(small(rounds=1), net="gal_cnn", acquisitions=("random", "bald"),
                       regimes=("warm",))
    result = al.run_paper(settings=settings, data=images, out=tmp_path, device="cpu",
                          progress=False, checkpoints=tmp_path / "parts")
    assert list(result.metrics["methods"]) == ["mcdropout", "flow"]
    for name in ("mcdropout", "flow"):
        assert set(result.metrics["methods"][name]) == {"random", "bald"}
        assert len(result.metrics["methods"][name]["bald"]["warm"]["mean"]) == 2
    assert "Gal et al.'s CNN" in (tmp_path / "report.md").read_text()
    assert al.Settings.paper().rounds * al.Settings.paper().acquire == 1000


def test_gal_cnn_shape_and_size():
    net = GalCNN()
    assert sum(p.numel() for p in net.parameters()) == 513_994
    assert net(torch.zeros(3, 784)).shape == net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_steps_per_round_and_area_under_curve():
    settings = replace(al.Settings(), epochs_per_round=50, min_steps=100)
    assert al.round_steps(20, settings) == 100         # 50 full-batch epochs < the minimum
    assert al.round_steps(300, settings) == 150        # 50 epochs of 3 batches of 128
    assert_close(acq.area_under_curve([0, 10, 20], [0.5, 0.7, 0.9]), 0.7)
    assert_close(acq.area_under_curve([0, 10, 30], [0.5, 0.7, 0.7]), (6 + 14) / 30)
    assert acq.area_under_curve([0], [0.4]) == 0.4


def test_the_versus_random_table_pairs_the_seeds():
    """BALD − random AUC per seed (same initial set and pool): 'yes' only when it wins on
    every seed, 'mixed' when on some."""
    acquired = [0, 10, 20]

    def entry(*curves):
        return {"seeds": {str(i): {"accuracy": c} for i, c in enumerate(curves)}}

    results = {"a": {"random": {"warm": entry([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])},
                     "bald": {"warm": entry([0.5, 0.7, 0.8], [0.4, 0.6, 0.6])}},
               "b": {"random": {"warm": entry([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])},
                     "bald": {"warm": entry([0.5, 0.5, 0.7], [0.4, 0.6, 0.7])}}}
    settings = small(acquisitions=("random", "bald"), regimes=("warm",))
    (versus,) = al._versus_random(results, ["a", "b"], settings, acquired)
    a, b = versus["rows"]
    # AUC over [0, 10, 20] is (c0 + 2 c1 + c2) / 4: a gains 0.075 on seed 0 and 0.05 on seed 1
    assert a["AUC − random (points)"] == pytest.approx(100 * (0.075 + 0.05) / 2)
    assert (a["seeds it wins"], a["beats random"]) == ("2 of 2", "yes")
    assert (b["seeds it wins"], b["beats random"]) == ("1 of 2", "mixed")
    assert al._versus_random(results, ["a"], small(acquisitions=("bald",)), acquired) == []


def test_bald_and_entropy_acquire_the_top_scores(images, monkeypatch):
    """With a stub score, every round takes the best-scoring items still in the pool."""
    settings = small(rounds=3, pool_subset=None)
    initial, pool = acq.initial_and_pool(images.train.y, pool_size=60, seed=0)
    stub = torch.randn(len(pool), generator=torch.Generator().manual_seed(7))
    seen = []

    def score(probs):
        seen.append(probs.shape)
        return stub

    for acquisition in ("bald", "entropy"):
        monkeypatch.setitem(al.ACQUISITIONS, acquisition, score)
        curve = al.learning_curve("map", acquisition, "warm", settings, images.train,
                                  images.test.subset(slice(0, 30)), initial, pool, seed=0,
                                  device="cpu", progress=False)
        ranked = pool[stub.argsort(descending=True)]
        for r, picked in enumerate(curve["indices"]):
            assert picked.tolist() == ranked[10 * r:10 * (r + 1)].tolist()
        assert curve["acquired"] == [0, 10, 20, 30]
        assert curve["labelled"] == [20, 30, 40, 50]
        labelled = curve["labelled_indices"]
        assert len(set(labelled.tolist())) == 50                  # no duplicates
        assert torch.equal(labelled[:20], initial)                # the initial set stays
        assert set(labelled[20:].tolist()) <= set(pool.tolist())  # acquired from the pool
        assert len(curve["accuracy"]) == settings.rounds + 1
    # the pool is scored from (S, pool, C) MC probabilities, once per round before acquiring
    assert seen == [(settings.pool_samples, 60, 10)] * 6


def test_random_acquisition_is_seeded_and_ignores_the_model(images):
    settings = small(rounds=2)
    test = images.test.subset(slice(0, 30))
    initial, pool = acq.initial_and_pool(images.train.y, pool_size=60, seed=0)

    def picks(name, regime, seed):
        curve = al.learning_curve(name, "random", regime, settings, images.train, test,
                                  initial, pool, seed=seed, device="cpu", progress=False)
        return [p.tolist() for p in curve["indices"]]

    base = picks("map", "warm", 0)
    assert picks("mcdropout", "reinit", 0) == base   # same seed: same picks, any model
    assert picks("map", "warm", 1) != base


def test_warm_start_continues_and_reinit_starts_afresh(images, monkeypatch):
    """Warm: each round starts from the previous round's final parameters. Reinit: never."""
    calls = []
    train = zoo.train

    def recording(name, settings, split, val, **kwargs):
        warm = kwargs.get("warm_start")
        entry = None if warm is None else copy.deepcopy(
            (warm.model.state_dict(), warm.guide.state_dict()))
        fitted = train(name, settings, split, val, **kwargs)
        calls.append({"entry": entry, "n": len(split), "steps": fitted.result.steps,
                      "val": val, "checkpoint": kwargs.get("checkpoint_dir"),
                      "exit": copy.deepcopy((fitted.model.state_dict(),
                                             fitted.guide.state_dict())),
                      "guide": fitted.guide})
        return fitted

    monkeypatch.setattr(zoo, "train", recording)
    settings = small(rounds=3, min_steps=4)
    initial, pool = acq.initial_and_pool(images.train.y, pool_size=60, seed=0)
    test = images.test.subset(slice(0, 30))
    for regime in ("warm", "reinit"):
        calls.clear()
        al.learning_curve("meanfield", "bald", regime, settings, images.train, test, initial,
                          pool, seed=0, device="cpu", progress=False)
        assert [c["n"] for c in calls] == [20, 30, 40, 50]
        assert [c["steps"] for c in calls] == [al.round_steps(c["n"], settings) for c in calls]
        assert all(c["val"] is None and c["checkpoint"] is None for c in calls)
        assert calls[0]["entry"] is None
        for before, after in zip(calls, calls[1:], strict=False):
            if regime == "warm":
                assert after["guide"] is before["guide"]
                for saved, start in zip(before["exit"], after["entry"], strict=True):
                    assert saved.keys() == start.keys()
                    for key in saved:
                        assert torch.equal(saved[key], start[key]), key
                # and training moved them
                assert any(not torch.equal(before["exit"][1][k], after["exit"][1][k])
                           for k in before["exit"][1])
            else:
                assert after["entry"] is None and after["guide"] is not before["guide"]


def test_a_shared_first_model_is_not_changed_by_warm_starts(images):
    settings = small(rounds=1)
    initial, pool = acq.initial_and_pool(images.train.y, pool_size=60, seed=0)
    test = images.test.subset(slice(0, 30))
    first = al.learning_curve("map", "entropy", "reinit", replace(settings, rounds=0),
                              images.train, test, initial, pool, seed=0, device="cpu",
                              progress=False)["model"]
    probs = zoo.sample_probs(first, torch.cat([images.train.x[pool], test.x]), 4)
    before = copy.deepcopy(first.guide.state_dict())
    curve = al.learning_curve("map", "entropy", "warm", settings, images.train, test, initial,
                              pool, seed=0, device="cpu", start=(first, probs), progress=False)
    assert curve["model"] is not first
    for key, value in first.guide.state_dict().items():
        assert torch.equal(value, before[key])


def test_shared_candidates_give_the_same_curve_and_a_wrong_size_is_an_error(images):
    settings = small(rounds=2)
    initial, pool = acq.initial_and_pool(images.train.y, pool_size=60, seed=0)
    test = images.test.subset(slice(0, 30))
    candidates = torch.cat([images.train.x[pool], test.x])
    args = ("map", "bald", "warm", settings, images.train, test, initial, pool)
    own = al.learning_curve(*args, seed=0, device="cpu", progress=False)
    shared = al.learning_curve(*args, seed=0, device="cpu", progress=False,
                               candidates=candidates)
    assert shared["accuracy"] == own["accuracy"]
    assert [i.tolist() for i in shared["indices"]] == [i.tolist() for i in own["indices"]]
    with pytest.raises(ValueError, match="candidates has 89 images; expected the pool's 60"):
        al.learning_curve(*args, seed=0, device="cpu", progress=False,
                          candidates=candidates[1:])


def test_every_registered_method_runs_through(images, tmp_path):
    """Every method, every acquisition and regime, no per-method code: metrics, tables, figure."""
    settings = small(rounds=1)
    result = al.run(settings=settings, data=images, out=tmp_path, device="cpu", progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    names = [n for n in hb.methods.available(variants=False) if n not in al.EXCLUDED]
    assert list(saved["methods"]) == names and set(saved["excluded"]) == set(al.EXCLUDED)
    assert saved["seeds"] == [0] and saved["acquired"] == [0, 10]
    assert saved["labelled"] == [20, 30]
    for name in names:
        assert set(saved["methods"][name]) == {"random", "bald", "entropy"}
        for acquisition in ("random", "bald", "entropy"):
            for regime in ("warm", "reinit"):
                entry = saved["methods"][name][acquisition][regime]
                assert len(entry["mean"]) == len(entry["std"]) == 2, (name, acquisition)
                assert len(entry["seeds"]["0"]["accuracy"]) == 2
                assert sum(entry["seeds"]["0"]["class_counts"]) == 30
                assert 0 <= entry["auc"] <= 1 and 0 <= entry["final"] <= 1
        # the first round's model is shared: every curve starts at the same accuracy
        starts = {e["mean"][0] for a in saved["methods"][name].values() for e in a.values()}
        assert len(starts) == 1, name
        assert saved["timing"][name]["trainings"] == 1 + 6 * settings.rounds
    versus, long, pivot, claims = saved["tables"]
    assert len(versus["rows"]) == len(names) * 4  # bald and entropy, warm and reinit
    assert {r["beats random"] for r in versus["rows"]} <= {"yes", "no", "mixed"}
    assert len(long["rows"]) == len(names) * 6
    assert [r["method"] for r in pivot["rows"]] == names
    assert {r["holds"] for r in claims["rows"]} <= {"yes", "partly", "no", "not run"}
    assert all(r["holds"] != "not run" for r in claims["rows"])  # flow, map, mcdropout ran
    assert (tmp_path / "active_learning.png").stat().st_size > 10_000
    report = (tmp_path / "report.md").read_text()
    assert "active_learning.png" in report and "Fig. 4" in report
    assert result.figures == [tmp_path / "active_learning.png"]


def test_seeds_are_averaged_and_absent_methods_leave_claims_unrun(images, tmp_path):
    settings = small(rounds=1, seeds=2, acquisitions=("random", "bald"))
    saved = al.run(["map", "mcdropout"], settings=settings, data=images, out=tmp_path,
                   device="cpu", seed=5, progress=False).metrics
    assert saved["seeds"] == [5, 6]
    entry = saved["methods"]["map"]["bald"]["warm"]
    curves = torch.tensor([entry["seeds"][s]["accuracy"] for s in ("5", "6")])
    assert_close(entry["mean"], curves.mean(0))
    assert_close(entry["std"], curves.std(0, correction=0))
    claims = {r["claim"]: r["holds"] for r in saved["paper_claims"]}
    assert claims["Warm starting is essential for BHN (helps it)"] == "not run"  # no flow
    assert next(v for k, v in claims.items() if k.startswith("The MLP baseline")) != "not run"
    # the file's own settings and records give its tables back (as merging per-method jobs does)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert al.payload_tables(written) == (written["paper_claims"], written["tables"])


def test_unknown_names_are_errors(images, tmp_path):
    with pytest.raises(ValueError, match="unknown method 'mapp'.*available"):
        al.run(["mapp"], settings=small(), data=images, out=tmp_path)
    with pytest.raises(ValueError, match="unknown acquisition 'margin'"):
        al.run(["map"], settings=small(acquisitions=("margin",)), data=images, out=tmp_path)
    with pytest.raises(ValueError, match="unknown regime 'cold'"):
        al.run(["map"], settings=small(regimes=("cold",)), data=images, out=tmp_path)


def test_finished_method_seeds_are_reused_and_gathered(images, tmp_path, monkeypatch):
    """Each (method, seed) is kept when it finishes: runs of separate methods gather into one
    report without training again, with the same curves."""
    settings = small(rounds=1, acquisitions=("random", "bald"))
    parts = tmp_path / "parts"
    alone = {name: al.run([name], settings=settings, data=images, out=tmp_path / name,
                          checkpoints=parts, device="cpu", progress=False).metrics
             for name in ("map", "mcdropout")}
    assert len(list((parts / "active-learning").glob("*.json"))) == 2

    def no_training(*args, **kwargs):
        raise AssertionError("a finished method and seed was trained again")

    monkeypatch.setattr(al, "_method_seed", no_training)
    both = al.run(["map", "mcdropout"], settings=replace(settings, budgets=(5,)), data=images,
                  out=tmp_path / "both", checkpoints=parts, device="cpu", progress=False).metrics
    assert [(r["method"], r["seed"]) for r in both["reused"]] == [("map", 0), ("mcdropout", 0)]
    for name, saved in alone.items():
        assert both["methods"][name]["bald"]["warm"]["mean"] == \
            saved["methods"][name]["bald"]["warm"]["mean"]
        assert both["timing"][name] == saved["timing"][name]
    assert both["compute_s"] == pytest.approx(sum(s["compute_s"] for s in alone.values()))
    assert "were reused" in (tmp_path / "both" / "report.md").read_text()
    # settings that shape the curves give another file: trained, not reused
    other = al.part_path(parts / "active-learning", "map", replace(settings, rounds=2), 0,
                         images.train, images.test.subset(slice(0, settings.test_examples)))
    assert not other.exists()


def test_a_corrupt_finished_result_is_an_error_naming_it(images, tmp_path):
    settings = small(rounds=1, acquisitions=("random",), regimes=("warm",))
    parts = tmp_path / "parts"
    al.run(["map"], settings=settings, data=images, out=tmp_path, checkpoints=parts,
           device="cpu", progress=False)
    (path,) = (parts / "active-learning").glob("*.json")
    saved = json.loads(path.read_text())
    saved["curves"]["random"]["warm"]["accuracy"] = [0.5]        # one round short
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=f"{path.name}.*not a finished.*delete"):
        al.run(["map"], settings=settings, data=images, out=tmp_path, checkpoints=parts)
    path.write_text("{truncated")
    with pytest.raises(ValueError, match="not a finished"):
        al.run(["map"], settings=settings, data=images, out=tmp_path, checkpoints=parts)
