"""Test-only re-implementation of the official MATPAC inference model (aurianworld/matpac, inference_matpac).

Written independently from the facts of docs/method.md (sections 1, 2, 3, 6, 7) and the official inference code's
behaviour, with the official module names so that `state_dict()` has the official key layout:
`patch_embed.proj.*`, `cls_token`, `pos_embed` (1, 1 + N, D), `student_encoder.blocks.{i}.{norm1, attn.qkv, attn.proj,
norm2, mlp.fc1, mlp.fc2}.*`, `student_encoder.norm.*`, plus `head_norm` / `head` (AudioSet head) and `probe`.

Nothing here imports matpac_hf: it is the independent side of the parity tests.
"""

import warnings

import numpy as np
import torch
from torch import nn


SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
LMS_MEAN = -7.056
LMS_STD = 4.193


# ----------------------------------------------------------------------------------------------------------------------
# Front end: the official `logMelSpectrogram` is torchaudio's MelSpectrogram in float32 (torch.hann_window, float32
# Slaney filters, |STFT|^2, spectrogram^T @ filters), then log(x + float32 eps) and the AudioSet normalisation. The
# float32 rounding matters: next to a loud low tone, float64-built filters give log-mel values up to 3e-4 away.
# ----------------------------------------------------------------------------------------------------------------------


def official_mel_filters() -> torch.Tensor:
    """(201, 80) float32, filter by filter, with the float32 operations of torchaudio's `melscale_fbanks(n_freqs=201,
    f_min=50, f_max=8000, n_mels=80, sample_rate=16000, norm="slaney", mel_scale="slaney")`."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(hz):  # Python floats, as torchaudio's `_hz_to_mel`
        return hz / f_sp if hz < min_log_hz else min_log_mel + float(np.log(hz / min_log_hz)) / logstep

    freqs = torch.linspace(0, SAMPLE_RATE // 2, N_FFT // 2 + 1, dtype=torch.float32)
    mels = torch.linspace(hz_to_mel(50.0), hz_to_mel(8000.0), 82, dtype=torch.float32)
    f_pts = torch.where(mels >= min_log_mel, min_log_hz * torch.exp(logstep * (mels - min_log_mel)), f_sp * mels)
    columns = []
    for m in range(80):
        lower, centre, upper = f_pts[m], f_pts[m + 1], f_pts[m + 2]
        down = (-1.0 * (lower - freqs)) / (centre - lower)
        up = (upper - freqs) / (upper - centre)
        columns.append(torch.clamp(torch.minimum(down, up), min=0.0) * (2.0 / (upper - lower)))
    return torch.stack(columns, dim=1)


def reference_log_mel(audio: np.ndarray) -> np.ndarray:
    """(samples,) 16 kHz mono -> (80, frames) normalised log-mel as the official front end computes it (float32)."""
    waveform = torch.as_tensor(np.asarray(audio, dtype=np.float32))[None]
    spectrum = torch.stft(
        waveform,
        n_fft=N_FFT,
        hop_length=HOP,
        win_length=N_FFT,
        window=torch.hann_window(N_FFT),
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    power = spectrum.abs().pow(2.0)  # (1, 201, frames)
    mel = torch.matmul(power.transpose(-1, -2), official_mel_filters()).transpose(-1, -2)  # (1, 80, frames)
    log_mel = torch.log(mel + torch.finfo(torch.float32).eps)
    return ((log_mel - LMS_MEAN) / LMS_STD)[0].numpy()


# ----------------------------------------------------------------------------------------------------------------------
# Positions: the MAE numpy formula
# ----------------------------------------------------------------------------------------------------------------------


def sincos_1d(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    angles = np.outer(positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d_with_cls(embed_dim: int, grid_height: int, grid_width: int) -> np.ndarray:
    """(1 + H * W, D): zero CLS row, then row-major (frequency-major) patches; first half embeds the width (time)
    coordinate, second half the height (frequency) coordinate, as MAE's meshgrid(w, h) ordering gives."""
    width_coord, height_coord = np.meshgrid(np.arange(grid_width), np.arange(grid_height))  # each (H, W)
    table = np.concatenate([sincos_1d(embed_dim // 2, width_coord), sincos_1d(embed_dim // 2, height_coord)], axis=1)
    return np.concatenate([np.zeros((1, embed_dim)), table], axis=0)


# ----------------------------------------------------------------------------------------------------------------------
# Modules (official names)
# ----------------------------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):  # (B, 1, F, T) -> (B, N, D)
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """timm-style attention: fused qkv, explicit softmax."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, seq, dim = x.shape
        qkv = self.qkv(x).reshape(batch, seq, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(batch, seq, dim)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class EncoderLayers(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, return_layers: bool = False):
        """With `return_layers`: (B, depth, seq, D), the output of every block, the last one after the final norm
        (docs/method.md, section 6). Also keeps `self.last_raw` (the last block before the norm) for the tests."""
        layers = []
        for block in self.blocks:
            x = block(x)
            layers.append(x)
        self.last_raw = x
        x = self.norm(x)
        if not return_layers:
            return x
        layers[-1] = x
        return torch.stack(layers, dim=1)


class OfficialMatpac(nn.Module):
    """The official inference wrapper's encoder path ("precise" mode, concat_freq=True)."""

    def __init__(
        self,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        n_freq: int = 80,
        n_t: int = 608,
        patch_size: int = 16,
        num_classes: int | None = None,
        probe_classes: int | None = None,
    ):
        super().__init__()
        self.n_t, self.patch_size = n_t, patch_size
        self.grid = (n_freq // patch_size, n_t // patch_size)
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        table = sincos_2d_with_cls(embed_dim, *self.grid)
        self.pos_embed = nn.Parameter(torch.from_numpy(table).float()[None], requires_grad=False)
        self.student_encoder = EncoderLayers(embed_dim, depth, num_heads, mlp_ratio)
        if num_classes is not None:
            self.head_norm = nn.BatchNorm1d(embed_dim, affine=False)
            self.head = nn.Linear(embed_dim, num_classes)
        if probe_classes is not None:
            self.probe = nn.Linear(self.grid[0] * embed_dim, probe_classes)

    def extract_features(self, x):
        """(B, F, T) one chunk, T a multiple of the patch size -> layer results (B, depth, 1 + N, D)."""
        x = self.patch_embed(x.unsqueeze(1))
        pos_embed = self.pos_embed[:, 1:, :]
        if x.shape[1] < pos_embed.shape[1]:  # cut per frequency row
            fbins, dims = self.grid[0], pos_embed.shape[-1]
            pos_embed = pos_embed.reshape(1, fbins, -1, dims)[:, :, : x.shape[1] // fbins].reshape(1, -1, dims)
        x = x + pos_embed
        self.last_embedded_patches = x
        cls_token = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls_token, x], dim=1)
        return self.student_encoder(x, return_layers=True)

    def _to_frames(self, tokens):
        """(B, ..., F * t, D) -> (B, ..., t, F * D): 'b n (f t) d -> b n t (f d)'."""
        fbins = self.grid[0]
        *lead, seq, dim = tokens.shape
        tokens = tokens.reshape(*lead, fbins, seq // fbins, dim)
        return tokens.transpose(-3, -2).reshape(*lead, seq // fbins, fbins * dim)

    def forward_precise(self, x, keep_internals: bool = False):
        """(B, F, T) normalised log-mel -> (emb (B, T', F * D), layer_results (B, depth, T', F * D)).

        Pads zeros (normalised domain) up to a multiple of the patch size, loops over `n_t`-frame chunks, and
        concatenates the chunks along time. With `keep_internals`, also returns per-chunk embedded patches and last
        raw block outputs in frame layout (for the hidden_states tests)."""
        unit = self.n_t
        n_chunk = (x.shape[-1] + unit - 1) // unit
        pad = (self.patch_size - x.shape[-1] % self.patch_size) % self.patch_size
        if pad:
            x = nn.functional.pad(x, (0, pad))
        outputs, embedded, raw = [], [], []
        for i in range(n_chunk):
            layer_results = self.extract_features(x[..., i * unit : (i + 1) * unit])[..., 1:, :]
            outputs.append(self._to_frames(layer_results))
            embedded.append(self._to_frames(self.last_embedded_patches))
            raw.append(self._to_frames(self.student_encoder.last_raw[:, 1:]))
        layer_results = torch.cat(outputs, dim=-2)
        emb = layer_results[:, -1]
        if keep_internals:
            return emb, layer_results, torch.cat(embedded, dim=-2), torch.cat(raw, dim=-2)
        return emb, layer_results

    def audioset_logits(self, x):
        """AudioSet head: mean over frequency and time of the 768-d tokens, BatchNorm (eval), linear."""
        emb, _ = self.forward_precise(x)  # (B, T', F * D)
        tokens = emb.reshape(emb.shape[0], emb.shape[1], self.grid[0], -1)
        return self.head(self.head_norm(tokens.mean(dim=(1, 2))))

    def probe_logits(self, x):
        emb, _ = self.forward_precise(x)
        return self.probe(emb.mean(dim=1))


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values everywhere except the fixed position table (so LayerNorm, biases and the CLS token matter)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name == "pos_embed":
                continue
            fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
            scale = 1.0 / fan_in**0.5 if parameter.dim() > 1 else 0.1
            noise = torch.randn(parameter.shape, generator=generator) * scale
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name.endswith("norm.weight"):
                noise = 1.0 + noise
            parameter.copy_(noise)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------------
# Training state (fairseq checkpoint layout): predictor, MATPAC++ heads, DINO heads, center, EMA teachers
# ----------------------------------------------------------------------------------------------------------------------


class Decoder(nn.Module):
    """The M2D predictor with the official names `decoder_embed`, `mask_token`, `decoder_pos_embed`,
    `decoder_blocks`, `decoder_norm`, `decoder_pred`."""

    def __init__(self, embed_dim, decoder_dim, depth, num_heads, grid, mlp_ratio=4.0):
        super().__init__()
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        table = sincos_2d_with_cls(decoder_dim, *grid)
        self.decoder_pos_embed = nn.Parameter(torch.from_numpy(table).float()[None], requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(decoder_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, embed_dim)


class MclHeads(nn.Module):
    def __init__(self, decoder_dim, embed_dim, num_heads):
        super().__init__()
        self.mcl_heads = nn.ModuleList([nn.Linear(decoder_dim, embed_dim) for _ in range(num_heads)])


class ClsHead(nn.Module):
    """DINO head: mlp.{0,2,4} with GELU, L2-normalise, weight-normed prototypes (old-style weight_g / weight_v)."""

    def __init__(self, in_dim, hidden_dim, bottleneck_dim, out_dim):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        with warnings.catch_warnings():  # the old-style weight_norm gives the official weight_g / weight_v names
            warnings.simplefilter("ignore", FutureWarning)
            self.last_layer = torch.nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))

    def forward(self, x):
        return self.last_layer(nn.functional.normalize(self.mlp(x), dim=-1, p=2))


class ClsLoss(nn.Module):
    def __init__(self, out_dim):
        super().__init__()
        self.register_buffer("center", torch.zeros(1, 1, out_dim))


class OfficialTrainingModel(OfficialMatpac):
    """Student + predictor + heads + center, with the teachers kept apart (fairseq stores them as nested dicts)."""

    def __init__(
        self,
        embed_dim=64,
        depth=2,
        num_heads=4,
        decoder_dim=32,
        decoder_depth=2,
        decoder_heads=2,
        head_hidden=48,
        head_bottleneck=16,
        head_out=40,
        mcl_heads=0,
        n_t=608,
    ):
        super().__init__(embed_dim=embed_dim, depth=depth, num_heads=num_heads, n_t=n_t)
        self.num_heads = num_heads
        # the official decoder always has `decoder_pred`, also in MATPAC++ (where the K heads replace it)
        self.decoder = Decoder(embed_dim, decoder_dim, decoder_depth, decoder_heads, self.grid)
        if mcl_heads:
            self.mcl_heads = MclHeads(decoder_dim, embed_dim, mcl_heads)
        self.cls_student_head = ClsHead(embed_dim, head_hidden, head_bottleneck, head_out)
        self.cls_head_loss = ClsLoss(head_out)
        self.teacher_encoder = [EncoderLayers(embed_dim, depth, num_heads, 4.0)]  # list: not a submodule
        self.teacher_head = [ClsHead(embed_dim, head_hidden, head_bottleneck, head_out)]

    def fairseq_checkpoint(self) -> dict:
        model_state = dict(self.state_dict())
        model_state["_ema"] = dict(self.teacher_encoder[0].state_dict())
        model_state["_cls_head_ema"] = dict(self.teacher_head[0].state_dict())
        return {
            "model": model_state,
            "cfg": {  # the official configuration's layout (an omegaconf DictConfig in real files; a dict here)
                "model": {
                    "_name": "matpac",
                    "mask_ratio": 0.7,
                    "ema_decay": 0.9995,
                    "ema_end_decay": 0.9999,
                    "n_t": "${task.max_sample_size}",
                    "encoder": {"embed_dim": self.patch_embed.proj.out_channels, "num_heads": self.num_heads},
                    "decoder": {
                        "embed_dim": "${model.encoder.embed_dim}",
                        "decoder_num_heads": self.decoder.decoder_blocks[0].attn.num_heads,
                    },
                    "cls_head_cfg": {"ema_decay": 0.99, "warmup_n_steps": 20, "head_dim_out": 40},
                    "mcl_heads": {"n_head": 3, "temperature_start": 0.2, "temperature_end": 0.001, "decay_rate": 0.9},
                },
                "optimization": {"max_update": 100, "clip_norm": 3.0},
                "criterion": {"_name": "model", "loss_weights": {"loss_cls": 0.5, "loss_pred": 0.5}},
            },
            "optimizer_history": [{"criterion_name": "ModelCriterion", "num_updates": 100}],
            "extra_state": {"train_iterator": {"version": 2, "epoch": 3, "iterations_in_epoch": 0, "shuffle": True}},
            "last_optimizer_state": {"state": {}, "param_groups": []},
        }

    def forward_decoder(self, x, ids_restore):
        """Official predictor forward on student output `x` (B, 1 + visible, D) -> predictions for the masked
        patches in shuffled order, (B, masked, D) or (B, masked, K, D) with MATPAC++ heads."""
        len_keep = x.shape[1] - 1
        x = self.decoder.decoder_embed(x)
        width = x.shape[-1]
        mask_tokens = self.decoder.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, width))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder.decoder_pos_embed
        for block in self.decoder.decoder_blocks:
            x = block(x)
        x = self.decoder.decoder_norm(x)[:, 1:]
        ids_shuffle = torch.argsort(ids_restore, dim=1)
        y = torch.gather(x, dim=1, index=ids_shuffle.unsqueeze(-1).repeat(1, 1, width))[:, len_keep:]
        if hasattr(self, "mcl_heads"):
            return torch.stack([head(y) for head in self.mcl_heads.mcl_heads], dim=2)
        return self.decoder.decoder_pred(y)


def randomize_training_(model: OfficialTrainingModel, seed: int = 0) -> OfficialTrainingModel:
    randomize_(model, seed)
    randomize_(model.teacher_encoder[0], seed + 1)
    randomize_(model.teacher_head[0], seed + 2)
    with torch.no_grad():
        model.cls_head_loss.center.copy_(torch.randn(model.cls_head_loss.center.shape) * 0.1)
        for head in (model.cls_student_head, model.teacher_head[0]):
            head.last_layer.weight_g.copy_(torch.rand(head.last_layer.weight_g.shape) + 0.5)
        # the decoder's fixed table must stay the sin-cos one
        table = sincos_2d_with_cls(model.decoder.decoder_pos_embed.shape[-1], *model.grid)
        model.decoder.decoder_pos_embed.copy_(torch.from_numpy(table).float()[None])
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------------
# Stand-ins for the authors' Hub repositories (auriankelen/matpac_*): trust_remote_code ports that wrap the official
# inference module, so their weights are the inference layout under the wrapper's attribute name, plus the log-mel
# front end's buffers; raw-waveform Wav2Vec2FeatureExtractor preprocessing; code files named in `auto_map`.
# ----------------------------------------------------------------------------------------------------------------------

REMOTE_CODE_MUST_NOT_RUN = 'raise RuntimeError("the stand-in\'s remote code was executed")\n'


def inference_state_dict(model: OfficialMatpac, prefix: str = "", front_end: bool = True) -> dict:
    """The official inference module's state dict under `prefix`, with the front end's buffers (Hann window, float32
    mel filter bank) under `log_mel.` as torchaudio's MelSpectrogram registers them."""
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    if front_end:
        state["log_mel.mel_spec.spectrogram.window"] = torch.hann_window(N_FFT)
        state["log_mel.mel_spec.mel_scale.fb"] = official_mel_filters().contiguous()
    return {prefix + key: value for key, value in state.items()}


def write_hub_standin(folder, model: OfficialMatpac, prefix: str = "model.", labels=None, config_fields=None):
    """Writes a folder laid out like an authors' Hub repository: `model.safetensors` (inference layout under
    `prefix`), `config.json` (model_type "matpac", `auto_map` to code files that must never run, `id2label` when
    `labels` is given, plus `config_fields`), a `Wav2Vec2FeatureExtractor` `preprocessor_config.json` and the code
    files. Returns the folder."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(inference_state_dict(model, prefix), folder / "model.safetensors")
    config = {
        "model_type": "matpac",
        "architectures": ["MatpacForAudioClassification" if labels else "MatpacModel"],
        "auto_map": {
            "AutoConfig": "configuration_matpac.MatpacConfig",
            "AutoModel": "modeling_matpac.MatpacModel",
            "AutoModelForAudioClassification": "modeling_matpac.MatpacForAudioClassification",
        },
        "inference_type": "precise",
        "pull_time_dimension": False,
        **(config_fields or {}),
    }
    if labels:
        config["id2label"] = {str(i): name for i, name in enumerate(labels)}
        config["label2id"] = {name: i for i, name in enumerate(labels)}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    preprocessor = {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "sampling_rate": SAMPLE_RATE,
        "padding_value": 0.0,
        "padding_side": "right",
        "do_normalize": False,
        "return_attention_mask": False,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    for code_file in ("configuration_matpac.py", "modeling_matpac.py"):
        (folder / code_file).write_text(REMOTE_CODE_MUST_NOT_RUN)
    return folder
