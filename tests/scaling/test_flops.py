"""FLOPs, parameter counts and MFU against hand-computed closed forms (pure Python, fast)."""

import dataclasses

import pytest

from scaling import flops
from scaling.config import PRESETS, ModelConfig


def preset(name: str, **changes) -> ModelConfig:
    return dataclasses.replace(ModelConfig(preset=name, **PRESETS[name]), **changes)


def test_gpt3_small_counts_by_hand():
    m = preset("gpt3-small")  # V 50257, D 768, L 12, F 3072, T 2048, LayerNorm, learned, tied
    V, D, L, F, T = 50257, 768, 12, 3072, 2048
    embedding = V * D + T * D  # 38,597,376 + 1,572,864
    per_layer = 4 * D * D + 2 * D * F + 2 * 2 * D  # attention + GELU MLP + 2 LayerNorms
    nonembedding = L * per_layer + 2 * D  # + final LayerNorm
    c = flops.param_counts(m)
    assert c.embedding == embedding == 40_170_240
    assert c.nonembedding == nonembedding == 84_973_056
    assert c.total == 125_143_296  # "125M" in the GPT-3 paper
    assert flops.matmul_params(m) == L * (4 * D * D + 2 * D * F) + D * V == 123_532_032


def test_gpt3_small_flops_per_token_by_hand():
    m = preset("gpt3-small")
    # 6 * (84,934,656 + 38,597,376) + 6 * 12 * 2048 * 768
    assert flops.flops_per_token(m) == 741_192_192 + 113_246_208 == 854_438_400.0


def test_gpt3_175b_is_175b():
    c = flops.param_counts(preset("gpt3-175b"))
    assert 174e9 < c.total < 176e9
    # Kaplan's N ~ 12 L D^2 for the non-embedding count
    assert c.nonembedding == pytest.approx(12 * 96 * 12288**2, rel=1e-3)


def test_modern_block_counts_by_hand():
    # SwiGLU, RMSNorm, RoPE, GQA (8 q heads, 2 kv heads), untied head
    m = ModelConfig(
        d_model=64,
        n_layers=3,
        n_heads=8,
        n_kv_heads=2,
        d_ff=96,
        vocab_size=259,
        seq_len=32,
        norm="rmsnorm",
        pos="rope",
        mlp="swiglu",
        tie_embeddings=False,
    )
    D, L, F, V, H, K = 64, 3, 96, 259, 8, 2
    attn = D * D + 2 * D * K * H + D * D  # q, k, v, o with head_dim 8
    mlp = 3 * D * F
    assert flops.param_counts(m) == flops.ParamCounts(
        total=2 * V * D + L * (attn + mlp + 2 * D) + D,
        embedding=2 * V * D,
        nonembedding=L * (attn + mlp + 2 * D) + D,
    )
    assert flops.matmul_params(m) == L * (attn + mlp) + D * V
    assert flops.flops_per_token(m) == 6 * (L * (attn + mlp) + D * V) + 6 * L * 32 * D


def test_forward_flops_and_validation_count():
    m = ModelConfig(d_model=64, n_layers=3, n_heads=8, vocab_size=259, seq_len=32)
    assert 3 * flops.forward_flops_per_token(m) == flops.flops_per_token(m)
    assert flops.n_validations(12, 12, 4) == 3  # at 4, 8, 12
    assert flops.n_validations(10, 10, 4) == 3  # at 4, 8 and the last step
    assert flops.n_validations(9, 10, 4) == 2  # stopped (diverged) before the end
    assert flops.n_validations(0, 10, 4) == 0


def test_flops_6nd():
    assert flops.flops_6nd(125_000_000, 300e9) == pytest.approx(2.25e20)


@pytest.mark.parametrize(
    "kind,dtype,peak",
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
        ("nvidia h100 80gb hbm3", "bf16", 989e12),
        ("NVIDIA H100 80GB HBM3", "float32", 494e12),  # JAX default f32 matmul = TF32
        ("NVIDIA H100 80GB HBM3", "float32_ieee", 67e12),
        ("NVIDIA H100 PCIe", "bfloat16", 756e12),
        ("NVIDIA H200", "bfloat16", 989e12),
        ("NVIDIA A100-SXM4-80GB", "bfloat16", 312e12),
        ("NVIDIA A100-SXM4-40GB", "float16", 312e12),
        ("TPU v4", "bfloat16", 275e12),
        ("TPU v5 lite", "bfloat16", 197e12),
        ("TPU v5e", "bfloat16", 197e12),
        ("TPU v5", "bfloat16", 459e12),
        ("TPU v5p", "bfloat16", 459e12),
        ("cpu", "float32", None),
        ("cpu", "bfloat16", None),
        ("TPU v4", "float32", None),  # depends on the precision setting: no single peak
        ("Some Future Chip", "bfloat16", None),
    ],
)
def test_peak_table(kind, dtype, peak):
    assert flops.peak_flops(kind, dtype) == peak


def test_peak_accepts_numpy_dtypes():
    import numpy as np

    assert flops.peak_flops("NVIDIA H100 80GB HBM3", np.dtype("float16")) == 989e12
    assert flops.peak_flops("NVIDIA H100 80GB HBM3", np.float32) == 494e12


def test_mfu():
    assert flops.mfu(1e12, "cpu", "float32", 1) is None
    assert flops.mfu(494.5e12, "NVIDIA H100 80GB HBM3", "bfloat16", 1) == pytest.approx(0.5)
    assert flops.mfu(8 * 989e12 * 0.4, "NVIDIA H100 80GB HBM3", "bfloat16", 8) == pytest.approx(0.4)
