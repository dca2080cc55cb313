import pytest

from emo_edge.config import (
    ModelConfig,
    Preset,
    TokenBudget,
    ViTConfig,
    from_dict,
    list_presets,
    load_model_config,
    load_preset,
    save_yaml,
)


def test_presets_load_and_layouts():
    assert {"tiny", "edge-small", "paper"} <= set(list_presets())
    paper = load_preset("paper").model
    assert (paper.tokens.fusion, paper.tokens.image, paper.tokens.video, paper.tokens.audio) == (64, 256, 64, 64)
    assert paper.tokens.total == 448
    assert load_preset("edge-small").model.tokens.total == 58  # 48 stream tokens and 10 attribute tokens


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="edge-small"):
        load_preset("huge")


def test_unknown_key_is_rejected_with_valid_keys():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['widht'\]"):
        from_dict(Preset, {"model": {"image_encoder": {"widht": 3}}})


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ViTConfig(width=130, heads=4), "not divisible by heads"),
        (lambda: TokenBudget(fusion=0, image=0, video=0, audio=0), "budget is empty"),
        (lambda: TokenBudget(image=15), "square number"),
        (lambda: ModelConfig(tokens=TokenBudget(video=9)), "tokens.video=9"),
        (lambda: from_dict(ModelConfig, {"frontend": {"image_size": 100}}), "image_size=100"),
    ],
)
def test_impossible_combinations_name_the_field(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_yaml_round_trip(tmp_path):
    cfg = load_preset("tiny").model
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_model_config(tmp_path / "c.yaml") == cfg
