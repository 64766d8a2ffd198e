"""The eval and bench commands end to end on a tiny budget (their outputs are committed under docs/)."""
import json

import pytest

from oscar_gguf import bench, cli, evaluate


def test_eval_writes_json_markdown_and_plot(tmp_path):
    out = tmp_path / "ev"
    assert cli.main(["eval", "--kv", "q4_0,oscar2", "--ctx", "256", "--max-chunks", "1", "--min-chunks", "1",
                     "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert list(report["results"]) == ["f16", "q4_0", "oscar2"]
    assert report["results"]["f16"]["kld"] == 0 and report["results"]["oscar2"]["kld"] > 0
    assert report["corpus"]["documents"] and report["scored_tokens_per_type"] == 127
    assert "| oscar2 | 2.25 |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    out.with_suffix(".md").unlink()
    assert cli.main(["render", str(out.with_suffix(".json"))]) == 0
    assert "Command: `oscar-gguf eval --kv q4_0,oscar2 --ctx 256" in out.with_suffix(".md").read_text()


def test_eval_on_the_held_out_kind_of_prose(tmp_path):
    out = tmp_path / "hb"
    assert cli.main(["eval", "--kv", "oscar2", "--ctx", "256", "--max-chunks", "1", "--min-chunks", "1",
                     "--text", "debian-handbook", "--no-plot", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["corpus"]["text"] == report["corpus"]["package"] == "debian-handbook"
    assert "text: Debian `debian-handbook`" in out.with_suffix(".md").read_text()


def test_bench_reports_speeds_and_exact_kv_sizes():
    report = bench.run("smollm2", ["q4_0", "oscar2"], [64, 128], n_decode=2, repeats=1)
    for t, r in report["results"].items():
        assert set(r["decode_tok_s"]) == {"64", "128"} and all(v > 0 for v in r["decode_tok_s"].values())
        assert r["k_mib_reported"] == pytest.approx(r["k_mib_expected"], abs=0.005)
        assert r["v_mib_reported"] == pytest.approx(r["v_mib_expected"], abs=0.005)
    assert "Relative to q4_0" in bench.markdown(report)


def test_bench_sequential_with_prefill_at_depth(tmp_path):
    out = tmp_path / "b"
    assert cli.main(["bench", "--kv", "f16,oscar3", "--depths", "0,64", "--prefill", "64:32", "--n-decode", "2",
                     "--repeats", "1", "--sequential", "--random-tokens", "--no-plot", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["prefill"] == {"depth": 64, "tokens": 32} and report["sequential"]
    assert all(r["prefill_tok_s"] > 0 and r["decode_tok_s"]["0"] > 0 for r in report["results"].values())
    assert not out.with_suffix(".png").exists() and "prefill 32 @ 64" in out.with_suffix(".md").read_text()


def test_compare_is_zero_for_identical_logits():
    import numpy as np

    logits = np.random.default_rng(0).standard_normal((5, 100)).astype(np.float32)
    kld, nll, top1 = evaluate.compare(logits, logits, np.arange(5))
    assert np.allclose(kld, 0) and top1.all() and (nll > 0).all()


def test_eval_and_bench_compare_f16_tiers_in_one_run(tmp_path):
    out = tmp_path / "ev"
    assert cli.main(["eval", "--kv", "q4_0,oscar2", "--ctx", "256", "--max-chunks", "1", "--min-chunks", "1",
                     "--tiers", "0:0,1:32", "--no-plot", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())["results"]
    assert list(res) == ["f16", "q4_0", "oscar2 s0w0", "oscar2 s1w32"]
    assert res["oscar2 s1w32"]["cache"]["tier_window"] == 32 and res["oscar2 s0w0"]["cache"]["tier_mib"] == 0
    assert res["oscar2 s1w32"]["kld"] < res["oscar2 s0w0"]["kld"]
    assert "kld_all_positions" in res["q4_0"] and "1/32 (" in out.with_suffix(".md").read_text()
    report = bench.run("smollm2", ["oscar3"], [64], n_decode=2, repeats=1, tiers=[(0, 0), (1, 16)])
    assert list(report["results"]) == ["oscar3 s0w0", "oscar3 s1w16"]
    assert report["results"]["oscar3 s1w16"]["tier_mib"] > 0
    assert "Relative to oscar3 s0w0" in bench.markdown(report)
    with pytest.raises(ValueError, match="SINKS:WINDOW"):
        cli._tiers("1-32")
