"""Config loading, overrides, presets and validation (pure Python, no JAX)."""

import tomllib

import pytest

from scaling import config as C
from scaling.errors import UserError


def test_builtin_config_loads_with_overrides():
    cfg = C.load("tiny", ["model.d_model=96", "train.lr=1e-3", "eval.shots=[0, 2]", "name=x"])
    assert cfg.model.d_model == 96 and cfg.model.preset == "cpu-s"
    assert cfg.train.lr == 1e-3 and cfg.eval.shots == (0, 2) and cfg.name == "x"
    # the preset's MLP is 4x its width: a width you set keeps it 4x (it kept the preset's 192)
    assert cfg.model.ff_dim == 4 * 96
    assert C.load("tiny", ["model.d_model=96", "model.d_ff=200"]).model.ff_dim == 200
    assert C.load("tiny", []).model.ff_dim == 4 * C.load("tiny", []).model.d_model


def test_toml_round_trip_and_hash_stability():
    cfg = C.load("tiny", ["train.steps=17"])
    again = C.from_dict(tomllib.loads(C.to_toml(cfg)))
    assert again == cfg
    assert C.config_hash(again) == C.config_hash(cfg)
    assert C.config_hash(C.load("tiny", ["train.steps=18"])) != C.config_hash(cfg)


def test_gpt3_preset_expands_and_fields_override_it():
    cfg = C.from_dict({"model": {"preset": "gpt3-small", "seq_len": 512}})
    assert (cfg.model.d_model, cfg.model.n_layers, cfg.model.n_heads) == (768, 12, 12)
    assert cfg.model.seq_len == 512 and cfg.model.vocab_size == 50257
    assert len([p for p in C.PRESETS if p.startswith("gpt3-")]) == 8


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"model": {"d_model": 64, "n_heads": 5}}, "model.n_heads"),
        ({"model": {"preset": "gpt9"}}, "model.preset"),
        ({"train": {"steps": 0}}, "train.steps"),
        ({"train": {"batch_size": -4}}, "train.batch_size"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"model": {"norm": "batchnorm"}}, "model.norm"),
        ({"model": {"n_heads": 4, "n_kv_heads": 3}}, "model.n_kv_heads"),
        ({"mesh": {"data": -1, "fsdp": -1}}, "mesh"),
        ({"model": {"widht": 3}}, "widht"),
        ({"optim": {}}, "optim"),
        ({"train": {"eval_every": -3}}, "train.eval_every"),
        ({"train": {"checkpoint_every": -1}}, "train.checkpoint_every"),
        ({"train": {"log_every": 0}}, "train.log_every"),
        # the last update must be past the warmup, or the cosine never reaches min_lr_ratio
        ({"train": {"steps": 10, "warmup_steps": 9}}, "train.warmup_steps"),
        ({"model": {"d_model": 12, "n_heads": 4}}, 'model.pos = "learned"'),
        ({"model": {"n_kv_heads": -2}}, "model.n_kv_heads = -2"),
        ({"model": {"d_ff": -1}}, "model.d_ff = -1"),
        # batch vs data x fsdp is known without devices when neither is -1 (sweep plan checks it)
        ({"mesh": {"data": 1, "fsdp": 3}, "train": {"batch_size": 8}}, "train.batch_size = 8"),
        ({"mesh": {"data": 3, "fsdp": -1}, "train": {"batch_size": 8}}, "mesh.data = 3"),
        # the eval fields name their value (a negative eval.seed was a numpy traceback)
        ({"eval": {"seed": -1}}, "eval.seed = -1"),
        ({"eval": {"n_items": 0}}, "eval.n_items = 0"),
        ({"eval": {"shots": [0, -2]}}, r"eval.shots = \[0, -2\]"),
        ({"eval": {"every": -5}}, "eval.every = -5"),
    ],
)
def test_bad_configs_name_the_field(raw, field):
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        C.from_dict(raw)


def test_mesh_resolution_against_device_count():
    cfg = C.from_dict({"mesh": {"data": -1, "fsdp": 2, "tensor": 2}, "train": {"batch_size": 8}})
    assert C.validate_mesh(cfg, 8) == (2, 2, 2)
    with pytest.raises(UserError, match="uses 3 devices, but 8 are visible"):
        C.validate_mesh(
            C.from_dict({"mesh": {"data": 3, "fsdp": 1, "tensor": 1}, "train": {"batch_size": 24}}),
            8,
        )
    with pytest.raises(UserError, match="batch_size"):
        C.validate_mesh(C.from_dict({"train": {"batch_size": 12}}), 8)
    tensor_fill = C.from_dict({"mesh": {"data": 1, "fsdp": 1, "tensor": -1}})  # 4 heads
    with pytest.raises(UserError, match=r"resolves to 8 .*n_heads = 4.*set mesh\.tensor to a"):
        C.validate_mesh(tensor_fill, 8)


def test_bad_override_syntax():
    with pytest.raises(UserError, match="section.key=value"):
        C.load("tiny", ["model.d_model"])
    with pytest.raises(UserError, match="unknown key"):
        C.load("tiny", ["d_model=3"])
    with pytest.raises(UserError, match="not found"):
        C.load("no-such-config")


def test_a_directory_where_a_toml_goes_is_named_as_one(tmp_path):
    """`scaling sweep plan runs/demo` (a sweep directory for the grid) said 'not found'."""
    with pytest.raises(UserError, match="is a directory, not a TOML file"):
        C.load(str(tmp_path))


def test_base_width_without_mup_is_a_warning_not_an_error(capsys, monkeypatch):
    """It does nothing under sp but changes the run id; a stored config holding it must still
    load (sweeps re-load every cell's config), so it is reported, not refused."""
    from scaling import fileio

    monkeypatch.setattr(fileio, "_warned", set())
    sp = C.load("tiny", ["model.base_width=64"])
    assert C.config_hash(sp) != C.config_hash(C.load("tiny"))
    (line,) = C.ignored_settings(sp)
    assert "model.base_width = 64" in line and 'model.param = "sp"' in line
    assert C.ignored_settings(C.load("tiny", ['model.param="mup"', "model.base_width=64"])) == []
    assert C.ignored_settings(C.load("tiny")) == []
    assert C.from_dict(tomllib.loads(C.to_toml(sp))) == sp  # re-loads silently
    assert capsys.readouterr().err == ""
    C.warn_ignored(sp)
    C.warn_ignored(sp)
    assert capsys.readouterr().err == f"warning: {line}\n"  # one line, once


@pytest.mark.parametrize(
    ("train", "val"), [("train", "train"), ("train", "train[:1%]"), ("train[:60%]", "train[50%:]")]
)
def test_a_validation_split_overlapping_training_is_refused_at_load(train, val):
    """Static, like every other data check: `scaling sweep plan` printed a plan (exit 0) for a
    grid whose every run would stop at startup with this error."""
    with pytest.raises(UserError, match=r"^data\.train_split = .* and data\.val_split = "):
        C.load("tiny", [f"data.train_split={train!r}", f"data.val_split={val!r}"])
    assert C.load("tiny", ["data.train_split='train[:90%]'", "data.val_split='train[90%:]'"])


def test_sweep_plan_refuses_a_validation_split_overlapping_training():
    from sweeps.grid import load_grid, plan_grid

    with pytest.raises(UserError, match=r"data\.val_split = 'train'"):
        plan_grid(load_grid("demo", ["base.data.val_split=train"]))


@pytest.mark.parametrize(
    "override", ['eval.shots=["a"]', "eval.shots=[1.5]", "eval.shots=[[1]]", "eval.tasks=[1]"]
)
def test_a_list_item_of_the_wrong_type_is_named(override):
    """Each item of a list field is checked: a string shot count was a TypeError traceback, a
    fractional one or a numeric task name was accepted."""
    with pytest.raises(UserError, match=r"is not valid; give a list of"):
        C.load("tiny", [override])
    assert C.load("tiny", ["eval.shots=[0, 2]"]).eval.shots == (0, 2)


def test_a_set_list_of_unquoted_strings_is_told_to_quote_them():
    """`--set data.paths=[corpus/*.txt]` is not TOML, so it arrived as one string and was
    answered "expected a list, e.g. [0, 1, 4]"; the fix quotes the user's own items."""
    with pytest.raises(
        UserError, match=r"""quote each string, e\.g\. --set 'eval\.tasks=\["add2", "b"\]'"""
    ):
        C.load("tiny", ["eval.tasks=[add2, b]"])
    with pytest.raises(
        UserError, match=r'data\.paths = \'a\.txt\': expected a list, e\.g\. \["a\.txt"\]'
    ):
        C.load("tiny", ['data.paths="a.txt"'])  # one item: the example is it, as a list
    with pytest.raises(UserError, match=r"eval\.shots = 4: expected a list, e\.g\. \[4\]$"):
        C.load("tiny", ["eval.shots=4"])
    assert C.load("tiny", ['eval.tasks=["add2"]']).eval.tasks == ("add2",)


@pytest.mark.parametrize("override", ["eval.shots=[0, 1, 0]", 'eval.tasks=["add2", "add2"]'])
def test_a_repeated_shot_count_or_task_is_refused(override):
    """A repeat was scored twice (twice the eval work, "shots": [0, 1, 0] in result.json) and
    gave the run another id than the same config listing it once."""
    with pytest.raises(UserError, match=r"is listed twice; list each once, e\.g\. eval\."):
        C.load("tiny", [override])


def test_a_misspelled_top_level_key_is_not_called_a_section():
    """`nmae = "x"` (or `steps = 3` above any [train]) was "unknown config section [nmae]"."""
    with pytest.raises(UserError, match=r"unknown top-level key 'nmae'; .* only `name`"):
        C.from_dict({"nmae": "x"})
    with pytest.raises(UserError, match=r"unknown config section \[trian\]"):
        C.from_dict({"trian": {"steps": 3}})


def test_a_warmup_below_minus_one_is_refused():
    """-5 was accepted and ran as -1 (automatic), under another run id than -1."""
    with pytest.raises(UserError, match=r"train\.warmup_steps = -5: .* or -1 for automatic"):
        C.load("tiny", ["train.warmup_steps=-5"])
    assert C.load("tiny", ["train.warmup_steps=-1"]).train.warmup_steps == -1


def test_a_toml_date_in_a_config_file_is_one_error_naming_the_field(tmp_path):
    """`name = 2024-01-01` is a TOML date: loading was a `TypeError: Object of type date is not
    JSON serializable` traceback (the overrides copied the table through JSON)."""
    path = tmp_path / "dated.toml"
    path.write_text("name = 2024-01-01\n[train]\nsteps = 3\n")
    with pytest.raises(UserError, match=r"name = 2024-01-01 \(a TOML date/time\): expected"):
        C.load(path)
    path.write_text("[data]\ndataset = 1979-05-27\n")
    with pytest.raises(UserError, match=r'data\.dataset = 1979-05-27 .*quoted: "1979-05-27"'):
        C.load(path)


def test_eval_every_with_evals_disabled_is_reported_as_doing_nothing():
    """eval.every with eval.enabled = false ran no evals but gave another run id, silently."""
    cfg = C.load("tiny", ["eval.enabled=false", "eval.every=5"])
    (line,) = C.ignored_settings(cfg)
    assert line.startswith("eval.every = 5 does nothing with eval.enabled = false")
    assert C.ignored_settings(C.load("tiny", ["eval.every=5"])) == []


def test_evals_enabled_with_no_shot_counts_is_refused():
    """eval.shots = [] with evals on trained and wrote an empty `evals` block, silently."""
    with pytest.raises(UserError, match=r"eval\.shots = \[\]: no few-shot eval would run"):
        C.load("tiny", ["eval.shots=[]"])
    assert C.load("tiny", ["eval.shots=[]", "eval.enabled=false"]).eval.shots == ()


def test_a_sweep_grid_given_as_a_run_config_says_it_is_one():
    """`scaling train sweeps/grids/demo.toml` said only "unknown config section [base]"."""
    with pytest.raises(UserError, match=r"\[base\]; .*a sweep grid's table: .*scaling sweep plan"):
        C.from_dict({"isoflop": {"budgets": [1e9]}, "base": {"model": {}}})
