"""The stem Python module against the CLI: the same greedy tokens as
`stem generate --greedy`, the same loss as `stem score` and `stem eval`, table rows as NumPy
views without a copy, overlays applied and reverted bit for bit, a short
training run, conversion to STEM and continued training, errors as RuntimeError. Run by ctest (PYTHONPATH=build/python,
STEM_BINARY=build/stem, STEM_SOURCE_DIR=the repository)."""
import json
import os
import subprocess
import tempfile
import unittest

import numpy as np

import stem

STEM = os.environ["STEM_BINARY"]
SRC = os.environ["STEM_SOURCE_DIR"]


def cli(*args):
    r = subprocess.run([STEM, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"stem {' '.join(args)}: {r.stderr}")
    return r.stdout


class StemModule(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        cls.data = os.path.join(d, "data")
        cli("prepare", "--input", os.path.join(SRC, "corpus/builtin/persuasion.txt"), "--out", cls.data,
            "--vocab-size", "512")
        cls.config = os.path.join(d, "config.json")
        with open(cls.config, "w") as f:
            json.dump({"model_type": "stem", "vocab_size": 512, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
                       "max_position_embeddings": 128, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
                       "tie_word_embeddings": False, "ffn_types": ["dense", "stem", "stem"],
                       "num_hash_experts": 0}, f)
        cls.run_dir = os.path.join(d, "run")
        steps = []
        cls.trained = stem.train(cls.config, cls.data, cls.run_dir, steps=6, batch=2, seq=64,
                                 on_step=lambda s, l: steps.append(s))
        cls.steps_seen = steps

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_train(self):
        self.assertEqual(self.steps_seen, [1, 2, 3, 4, 5, 6])
        self.assertEqual(len(self.trained["losses"]), 6)
        self.assertTrue(self.trained["finished"])
        self.assertTrue(os.path.isdir(self.trained["checkpoint"]))
        self.assertTrue(all(np.isfinite(self.trained["losses"])))

    def test_train_tables_option_is_checked(self):
        with self.assertRaisesRegex(RuntimeError, "tables = 'ssd'"):
            stem.train(self.config, self.data, os.path.join(self.tmp.name, "ssd"), steps=1, tables="ssd")
        with self.assertRaisesRegex(RuntimeError, "--tables disk needs --lazy-tables"):
            stem.train(self.config, self.data, os.path.join(self.tmp.name, "ssd"), steps=1, tables="disk")

    def test_train_precision(self):
        with self.assertRaisesRegex(RuntimeError, "unknown value 'f16'"):
            stem.train(self.config, self.data, os.path.join(self.tmp.name, "f16"), steps=1, precision="f16")
        if "no native" in cli("bench", "gemm"):
            self.skipTest("this CPU has no native BF16 products")
        r = stem.train(self.config, self.data, os.path.join(self.tmp.name, "bf16"), steps=3, batch=2, seq=64,
                       precision="bf16", lazy_tables=True, tables="disk")
        self.assertTrue(r["finished"])
        self.assertTrue(all(np.isfinite(r["losses"])))
        # Close to the F32 run of the same seed (rounding, not another model).
        self.assertLess(abs(r["losses"][0] - self.trained["losses"][0]), 0.02)

    def test_generate_equals_cli_greedy(self):
        m = stem.Model.load(self.run_dir)
        tok = m.tokenizer()
        streamed = []
        r = m.generate(tok, "It was", max_new_tokens=16, greedy=True, on_token=lambda i, t: streamed.append(t))
        out = json.loads(cli("generate", "--model", self.run_dir, "--prompt", "It was", "-n", "16", "--greedy",
                             "--json"))
        self.assertEqual(r["ids"], out["ids"])
        self.assertEqual(r["text"], out["text"])
        self.assertEqual("".join(streamed), r["text"])

    def test_score_equals_cli(self):
        m = stem.Model.load(self.run_dir)
        ids = [1, 40, 300, 7, 99, 256, 3, 12]
        path = os.path.join(self.tmp.name, "ids.txt")
        with open(path, "w") as f:
            f.write(" ".join(map(str, ids)))
        want = json.loads(cli("score", "--model", self.run_dir, "--tokens-file", path, "--json"))["loss"]
        self.assertEqual(m.score(np.array(ids, dtype=np.int32)), want)
        disk = stem.Model.load(self.run_dir, tables="disk")
        self.assertEqual(disk.score(np.array(ids)), want)  # every tier, bit for bit
        loss, logits = disk.score(np.array([ids, ids]), logits=True)  # a batch: other GEMM shapes
        self.assertAlmostEqual(loss, want, delta=1e-6 * want)
        self.assertEqual(logits.shape, (16, 512))

    def test_perplexity_equals_cli(self):
        m = stem.Model.load(self.run_dir)
        got = m.perplexity(self.data, seq=64, batch=2)
        want = json.loads(cli("eval", "--model", self.run_dir, "--data", self.data, "--seq", "64", "--batch", "2",
                              "--json"))
        self.assertEqual(got["loss"], want["loss"])
        self.assertEqual(got["windows"], want["windows"])
        self.assertEqual(got["data"], want["data"])
        self.assertEqual(len(got["window_loss"]), got["windows"])
        self.assertAlmostEqual(float(np.mean(got["window_loss"])), got["loss"], places=12)
        self.assertEqual(got["path"], "forward")
        steps = m.perplexity(self.data, seq=64, max_tokens=256, decode=True)
        self.assertEqual(steps["path"], "decode")
        self.assertAlmostEqual(steps["window_loss"][0], got["window_loss"][0], delta=1e-5 * got["loss"])
        with self.assertRaises(RuntimeError):
            m.perplexity(os.path.join(self.tmp.name, "missing"))

    def test_evaluate_task_equals_cli(self):
        m = stem.Model.load(self.run_dir)
        path = os.path.join(self.tmp.name, "task.jsonl")
        with open(path, "w") as f:
            f.write(json.dumps({"context": "It was a", "choices": ["day", "very long night"], "gold": 0}) + "\n")
            f.write(json.dumps({"context": "Anne Elliot", "choices": ["was", "had", "the"], "gold": 1}) + "\n")
        got = m.evaluate_task(m.tokenizer(), path)
        want = json.loads(cli("eval", "--model", self.run_dir, "--task", path, "--json"))["tasks"][0]
        self.assertEqual(got["acc"], want["acc"])
        self.assertEqual(got["acc_norm"], want["acc_norm"])
        self.assertEqual(len(got["logprobs"]), 2)
        separate = m.evaluate_task(m.tokenizer(), path, share_context=False)
        np.testing.assert_allclose(np.concatenate(got["logprobs"]), np.concatenate(separate["logprobs"]), rtol=1e-5)

    def test_table_view_rows_and_overlays(self):
        m = stem.Model.load(self.run_dir)
        view = m.table(1)
        self.assertEqual(view.shape, (512, 64))
        self.assertFalse(view.flags["OWNDATA"])
        before = m.score(np.arange(1, 20))
        row = m.table_row(1, 5)
        np.testing.assert_array_equal(row, view[5])
        view[5] += 1.0  # in place: the model sees it
        np.testing.assert_array_equal(m.table_row(1, 5), row + 1.0)
        m.set_table_row(1, 5, row)
        self.assertEqual(m.score(np.arange(1, 20)), before)
        # an overlay made by the CLI, applied and reverted
        ovl = os.path.join(self.tmp.name, "a.ovl")
        tok = m.tokenizer()
        words = [tok.piece(i) for i in range(300, 512) if tok.piece(i).startswith("\u2581") and len(tok.piece(i)) > 3]
        cli("edit", "swap", "--model", self.run_dir, "--from", words[0][1:], "--to", words[1][1:], "--out", ovl)
        edited = m.apply_overlays([ovl])
        self.assertGreater(edited.rows, 0)
        ids = np.array(tok.encode("the " + words[0][1:] + " was"), dtype=np.int32)
        base = stem.Model.load(self.run_dir).score(ids)
        self.assertNotEqual(m.score(ids), base)
        edited.revert()
        self.assertEqual(m.score(ids), base)

    def test_convert_and_continued_training(self):
        d = self.tmp.name
        conv = os.path.join(d, "conv")
        rep = stem.convert_to_stem(self.run_dir, conv, layers="0", init="mean", data=self.data, sample_tokens=4096)
        self.assertEqual(rep["layers"], [0])
        self.assertEqual(rep["sample_tokens"], 4096)
        with open(os.path.join(conv, "config.json")) as f:
            self.assertEqual(json.load(f)["ffn_types"], ["stem", "stem", "stem"])
        # A teacher with weight 0 is plain training, bit for bit; the options are saved.
        kw = dict(steps=3, batch=2, seq=64, init_from=conv, lr_tables=2e-2, freeze_backbone_steps=1)
        plain = stem.train("", self.data, os.path.join(d, "ct"), **kw)
        kd = stem.train("", self.data, os.path.join(d, "ct_kd"), teacher=self.run_dir, distill_alpha=0.0, **kw)
        self.assertEqual(plain["losses"], kd["losses"])
        with open(os.path.join(plain["checkpoint"], "trainer_state.json")) as f:
            options = json.load(f)["options"]
        self.assertAlmostEqual(options["lr_tables"], 2e-2)
        self.assertEqual(options["freeze_backbone_steps"], 1)
        back = stem.convert_to_dense(conv, os.path.join(d, "back"), layers="0", data=self.data, sample_tokens=4096)
        self.assertLess(back["fit_rel_error"], 1.0)
        with self.assertRaisesRegex(RuntimeError, "not one of embed, mean, zero"):
            stem.convert_to_stem(self.run_dir, os.path.join(d, "bad"), layers="0", init="avg")
        with self.assertRaisesRegex(RuntimeError, "not dense"):
            stem.convert_to_stem(self.run_dir, os.path.join(d, "bad"), layers="1")

    def test_errors(self):
        with self.assertRaisesRegex(RuntimeError, "no_such_dir"):
            stem.Model.load(os.path.join(self.tmp.name, "no_such_dir"))
        m = stem.Model.load(self.run_dir)
        with self.assertRaisesRegex(RuntimeError, "outside"):
            m.score(np.array([1, 2, 9999]))
        with self.assertRaisesRegex(RuntimeError, "not a STEM layer"):
            m.table(0)
        with self.assertRaisesRegex(RuntimeError, "on_token: .*division by zero"):
            m.generate(m.tokenizer(), "x", on_token=lambda i, t: 1 / 0 if i >= 0 else None)


if __name__ == "__main__":
    unittest.main()
