"""The experiment scripts' command lines: every flag has a description in --help (the
config's own comments), the catalogue's cells and the other closed sets are listed as
choices, and a value outside them is a usage error naming the flag before any work."""

import dataclasses

import common
import mnist1d_peer
import pytest
import seq2seq
import train
from test_hello import load_hello
from vanishing import config as vconfig

import rnnjax

CONFIGS = {
    "train": train.Config,
    "seq2seq": seq2seq.Config,
    "vanishing": vconfig.Config,
    "hello": load_hello().Config,
    "mnist1d_peer": mnist1d_peer.Config,
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_flag_is_described(name):
    cls = CONFIGS[name]
    helps = common.field_help(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not helps.get(f.name)]
    assert not missing, f"{name}: fields without a --help text: {missing}"
    assert set(getattr(cls, "CHOICES", {})) <= {f.name for f in dataclasses.fields(cls)}


def test_field_help_reads_trailing_and_preceding_comments():
    @dataclasses.dataclass
    class C:
        a: int = 1  # the a
        # the b, said
        # on two lines
        b: str = "x"
        c: float = 0.5

    assert common.field_help(C) == {"a": "the a", "b": "the b, said on two lines"}


@pytest.mark.parametrize("script", [train, seq2seq])
def test_help_lists_the_catalogue_and_bad_choices_are_usage_errors(script, capsys):
    with pytest.raises(SystemExit) as e:
        script.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--cell {" + ",".join(rnnjax.cells.names()) + "}" in out
    assert "clip the global gradient norm" in out
    with pytest.raises(SystemExit) as e:
        script.main(["--cell", "lstn"])
    assert e.value.code == 2
    assert "argument --cell: invalid choice: 'lstn'" in capsys.readouterr().err


def test_list_flags_check_each_value(capsys):
    with pytest.raises(SystemExit) as e:
        common.parse_config(vconfig.Config, ["--cells", "lstm,nope"])
    assert e.value.code == 2
    assert "argument --cells: 'nope' not among" in capsys.readouterr().err
    cfg, _ = common.parse_config(vconfig.Config, ["--cells", "lstm,gru"])
    assert cfg.cells == ("lstm", "gru")


def test_misapplied_options_are_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--dropout", "0.2", "--out", str(tmp_path)])
    assert e.value.code == 2 and "--num_layers is 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        seq2seq.main(["--attention", "luong_dot", "--out", str(tmp_path)])
    assert e.value.code == 2 and "--no-bidirectional" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no run folder left behind
