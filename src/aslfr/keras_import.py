"""The seed's own weights: a Keras 2 `model.save_weights` h5 of its network -> an aslfr checkpoint.

The seed publishes its base and final models as such files, with its normalisation statistics
as two pickles (`MEANs.p`, `STDs.p`: the 600 features' means and standard deviations). Both are
read as data: the h5 through h5py's datasets (nothing in it is executed), the pickles through an
unpickler that builds plain numbers, lists and numpy arrays and refuses everything else.

The h5 holds one group per layer, in the order of `model.layers`, and the layer names the
seed's code gives (`stem_conv`, `stem_bn`, `<n>_expand_conv`, `<n>_dwconv`, `<n>_bn`,
`<n>_project_conv`, `top_conv`, `late_dropout`) or that Keras generates (`eca_<i>`,
`layer_normalization_<i>`, `multi_head_self_attention_<i>`, `dense_<i>`). The reader walks the
layers in that order against the network's structure, so the width, the number of stages, the
expansion and the kernel sizes come from the file, and the first layer that does not fit is
named. The number of heads cannot be read from weights: it comes from the preset.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from aslfr.config import Config, preset
from aslfr.features import N_FEATURES
from aslfr.messages import first_line
from aslfr.vocab import N_CLASSES


class KerasImportError(ValueError):
    pass


@dataclass
class Layer:
    name: str
    weights: dict[str, np.ndarray]   # by the weight's own name: kernel, bias, gamma, ...
    paths: dict[str, str] = field(default_factory=dict)  # the same keys -> the h5 dataset's path

    def get(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if key not in self.weights:
            raise KerasImportError(f"layer {self.name!r}: no weight {key!r} (it has {', '.join(self.weights) or 'none'})")
        w = self.weights[key]
        if shape is not None and tuple(w.shape) != shape:
            raise KerasImportError(f"layer {self.name!r}: {key} has shape {tuple(w.shape)}, expected {shape}")
        return w


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_h5_layers(path: Path) -> list[Layer]:
    """The layers that carry weights, in the file's order, each weight by its last name part
    (`1_dwconv/1_dwconv_dwconv/depthwise_kernel:0` -> `depthwise_kernel`); MultiHeadSelfAttention's
    two kernels come as `kernel` and `kernel_1` (qkv, then the output projection)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise KerasImportError(f"{path}: not an HDF5 file (expected a Keras 2 save_weights .h5)")
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f  # model.save() files nest them
            if "layer_names" not in root.attrs:
                raise KerasImportError(f"{path}: no 'layer_names' attribute: not a Keras 2 weights file")
            layers = []
            for lname in map(_text, root.attrs["layer_names"]):
                group = root[lname]
                names = [_text(w) for w in group.attrs.get("weight_names", [])]
                if not names:
                    continue
                weights: dict[str, np.ndarray] = {}
                for wname in names:
                    stem = key = wname.rsplit("/", 1)[-1].split(":")[0]
                    k = 1
                    while key in weights:
                        key, k = f"{stem}_{k}", k + 1
                    arr = np.asarray(group[wname][()])
                    if arr.dtype.kind not in "fiu":
                        raise KerasImportError(f"{path}: layer {lname!r} weight {wname!r} is {arr.dtype}, not numbers")
                    weights[key] = arr
                layers.append(Layer(lname, weights))
    except KerasImportError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise KerasImportError(f"{path}: unreadable HDF5 ({first_line(e, 160)}); truncated or damaged?") from None
    return layers


class _Cursor:
    def __init__(self, layers: list[Layer], path: Path) -> None:
        self.layers, self.i, self.path = layers, 0, path

    def peek(self) -> Layer | None:
        return self.layers[self.i] if self.i < len(self.layers) else None

    def take(self, pattern: str, what: str) -> Layer:
        layer = self.peek()
        if layer is None:
            raise KerasImportError(f"{self.path}: the file ends where {what} ({pattern}) was expected")
        if not re.fullmatch(pattern, layer.name):
            raise KerasImportError(f"{self.path}: layer {layer.name!r} (number {self.i + 1} with weights) "
                                   f"does not fit: expected {what} ({pattern})")
        self.i += 1
        return layer


def _linear(w: np.ndarray) -> torch.Tensor:  # Dense kernel (in, out) -> Linear weight (out, in)
    return torch.from_numpy(np.ascontiguousarray(w.T)).float()


def _t(w: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(w)).float()


#: a Keras BatchNormalization's weights -> ours
_BN_WEIGHTS = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
               ("moving_variance", "running_var"))


def _batch_norm(sd: dict[str, torch.Tensor], layer: Layer, prefix: str, width: int,
                sources: dict[str, str] | None = None) -> None:
    """A BatchNormalization layer's four weights into `sd` under `prefix`; with `sources`, where
    each moving statistic came from in the file."""
    for key, ours in _BN_WEIGHTS:
        sd[f"{prefix}.{ours}"] = _t(layer.get(key, (width,)))
        if sources is not None and key.startswith("moving"):
            sources[f"{prefix}.{ours}"] = layer.paths[key]


def keras_state_dict(path: Path, base: Config) -> tuple[Config, dict[str, torch.Tensor]]:
    """Read the h5 against the network's structure; returns the settings (width, stages,
    expansion, kernel sizes from the file; the rest from `base`) and a state dict for
    `FingerspellingModel`."""
    path = Path(path)
    cur = _Cursor(read_h5_layers(path), path)
    sd: dict[str, torch.Tensor] = {}

    stem = cur.take(r"stem_conv", "the stem Dense")
    kernel = stem.get("kernel")
    if kernel.ndim != 2 or kernel.shape[0] != N_FEATURES:
        raise KerasImportError(f"{path}: layer 'stem_conv' kernel has shape {kernel.shape}, expected ({N_FEATURES}, width)")
    dim = int(kernel.shape[1])
    sd["stem.weight"] = _linear(kernel)

    def bn(layer: Layer, prefix: str, width: int) -> None:
        _batch_norm(sd, layer, prefix, width)

    bn(cur.take(r"stem_bn", "the stem BatchNormalization"), "stem_bn", dim)

    stages: list[list[int]] = []
    hidden = None
    while cur.peek() is not None and re.fullmatch(r"\d+_expand_conv", cur.peek().name):
        s = len(stages)
        kernels: list[int] = []
        while cur.peek() is not None and re.fullmatch(r"\d+_expand_conv", cur.peek().name):
            j = len(kernels)
            prefix = f"stages.{s}.{j}"
            expand = cur.take(r"\d+_expand_conv", "a conv block's expanding Dense")
            n = expand.name.split("_")[0]
            ek = expand.get("kernel")
            if ek.ndim != 2 or ek.shape[0] != dim:
                raise KerasImportError(f"{path}: layer {expand.name!r} kernel has shape {ek.shape}, expected ({dim}, hidden)")
            hidden = hidden or int(ek.shape[1])
            sd[f"{prefix}.expand.weight"] = _linear(expand.get("kernel", (dim, hidden)))
            sd[f"{prefix}.expand.bias"] = _t(expand.get("bias", (hidden,)))
            dw = cur.take(rf"{n}_dwconv", f"block {n}'s causal depthwise conv")
            dk = dw.get("depthwise_kernel")
            if dk.ndim != 3 or dk.shape[1:] != (hidden, 1):
                raise KerasImportError(f"{path}: layer {dw.name!r} depthwise_kernel has shape {dk.shape}, "
                                       f"expected (kernel size, {hidden}, 1)")
            kernels.append(int(dk.shape[0]))
            sd[f"{prefix}.depthwise.weight"] = _t(dk[:, :, 0].T[:, None, :])
            bn(cur.take(rf"{n}_bn", f"block {n}'s BatchNormalization"), f"{prefix}.bn", hidden)
            eca = cur.take(r"eca(_\d+)?", f"block {n}'s ECA")
            sd[f"{prefix}.eca.conv.weight"] = _t(eca.get("kernel", (5, 1, 1))[:, 0, 0][None, None, :])
            project = cur.take(rf"{n}_project_conv", f"block {n}'s projecting Dense")
            sd[f"{prefix}.project.weight"] = _linear(project.get("kernel", (hidden, dim)))
            sd[f"{prefix}.project.bias"] = _t(project.get("bias", (dim,)))
        t = f"stages.{s}.{len(kernels)}"
        ln = cur.take(r"layer_normalization(_\d+)?", "the transformer's first LayerNormalization")
        sd[f"{t}.norm1.weight"], sd[f"{t}.norm1.bias"] = _t(ln.get("gamma", (dim,))), _t(ln.get("beta", (dim,)))
        mhsa = cur.take(r"multi_head_self_attention(_\d+)?", "the transformer's MultiHeadSelfAttention")
        sd[f"{t}.attn.qkv.weight"] = _linear(mhsa.get("kernel", (dim, 3 * dim)))
        sd[f"{t}.attn.out.weight"] = _linear(mhsa.get("kernel_1", (dim, dim)))
        ln = cur.take(r"layer_normalization(_\d+)?", "the transformer's second LayerNormalization")
        sd[f"{t}.norm2.weight"], sd[f"{t}.norm2.bias"] = _t(ln.get("gamma", (dim,))), _t(ln.get("beta", (dim,)))
        ffn_in = cur.take(r"dense(_\d+)?", "the transformer's first feed-forward Dense")
        sd[f"{t}.ffn_in.weight"] = _linear(ffn_in.get("kernel", (dim, hidden)))
        ffn_out = cur.take(r"dense(_\d+)?", "the transformer's second feed-forward Dense")
        sd[f"{t}.ffn_out.weight"] = _linear(ffn_out.get("kernel", (hidden, dim)))
        if stages and kernels != stages[0]:
            raise KerasImportError(f"{path}: stage {s + 1} has kernel sizes {kernels}, stage 1 has {stages[0]}")
        stages.append(kernels)
    if not stages:
        layer = cur.peek()
        raise KerasImportError(f"{path}: layer {layer.name if layer else 'end of file'!r} does not fit: "
                               f"expected the first conv block (<n>_expand_conv)")

    top = cur.take(r"top_conv", "the head's hidden Dense")
    sd["head_hidden.weight"] = _linear(top.get("kernel", (dim, hidden)))
    sd["head_hidden.bias"] = _t(top.get("bias", (hidden,)))
    step = 0
    if cur.peek() is not None and cur.peek().name.startswith("late_dropout"):
        counter = cur.take(r"late_dropout(_\d+)?", "the late dropout's step counter")
        step = int(np.asarray(next(iter(counter.weights.values()))).reshape(-1)[0])
    head = cur.take(r"dense(_\d+)?|classifier", "the classifier Dense")
    sd["head_out.weight"] = _linear(head.get("kernel", (hidden, N_CLASSES)))
    sd["head_out.bias"] = _t(head.get("bias", (N_CLASSES,)))
    sd["late_dropout.step"] = torch.tensor(step, dtype=torch.long)
    if cur.peek() is not None:
        raise KerasImportError(f"{path}: layer {cur.peek().name!r} follows the classifier: not the seed's network")

    if hidden % dim:
        raise KerasImportError(f"{path}: hidden width {hidden} is not a multiple of the width {dim}")
    return with_architecture(base, dim, len(stages), hidden // dim, tuple(stages[0]), path), sd


def with_architecture(base: Config, dim: int, stages: int, expand: int, kernel_sizes: tuple[int, ...],
                      path: Path) -> Config:
    """`base` with the architecture read from a weights file, checked."""
    cfg = replace(base, dim=dim, stages=stages, expand=expand, kernel_sizes=kernel_sizes)
    try:
        return cfg.check()
    except ValueError as e:
        raise KerasImportError(f"{path}: the network read from the file does not fit the preset: {e}") from None


# --------------------------------------------------------------------------------------------
# The seed's normalisation statistics (pickled arrays)
# --------------------------------------------------------------------------------------------

class _ArraysOnly(pickle.Unpickler):
    """Builds numpy arrays and plain Python values; any other class or function is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "list"), ("builtins", "tuple")}

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if module.startswith("numpy") and name.endswith("DType"):  # numpy 2's dtype classes
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refuses {module}.{name}: only numpy arrays and numbers are read")


def read_stats_pickle(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        value = _ArraysOnly(io.BytesIO(path.read_bytes())).load()
        arr = np.asarray(value, dtype=np.float64)
    except Exception as e:  # noqa: BLE001 - every failure is the same user error
        raise KerasImportError(f"{path}: not a pickled array of numbers ({e})") from None
    arr = arr.reshape(-1) if arr.size == N_FEATURES else arr
    if arr.shape != (N_FEATURES,):
        raise KerasImportError(f"{path}: holds an array of shape {arr.shape}, expected the {N_FEATURES} features' values")
    if not np.isfinite(arr).all():
        raise KerasImportError(f"{path}: holds non-finite values")
    return arr.astype(np.float32)


def import_keras(h5: Path, out: Path, preset_name: str | None = None,
                 stats: tuple[Path, Path] | None = None) -> dict:
    """Write an aslfr checkpoint from a seed h5 (and, optionally, its MEANs.p / STDs.p); returns
    what was read. Without `preset_name`, seed-base for 3 stages and seed-final otherwise."""
    from aslfr.files import atomic_write
    from aslfr.model import FingerspellingModel

    h5, out = Path(h5), Path(out)
    if h5.is_file() and is_second_place_h5(h5):
        if stats is not None:
            raise KerasImportError(f"{h5}: the 2nd place's network normalises each sequence itself; it takes no --stats")
        return import_second_place(h5, out, preset_name or "second-place")
    read, sd = keras_state_dict(h5, preset(preset_name or "seed-final"))  # the file is read once
    chosen = preset_name or ("seed-base" if read.stages == 3 else "seed-final")
    cfg = with_architecture(preset(chosen), read.dim, read.stages, read.expand, read.kernel_sizes, h5)
    differs = {k: (getattr(cfg, k), getattr(preset(chosen), k)) for k in ("dim", "stages", "expand", "kernel_sizes")
               if getattr(cfg, k) != getattr(preset(chosen), k)}
    model = FingerspellingModel(cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:  # the walk above covers the network: this is a bug, not bad input
        raise RuntimeError(f"keras import left {missing} unset and {unexpected} unused")
    state = {"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 0, "step": 0,
             "source": {"keras_h5": str(h5), "sha256": hashlib.sha256(h5.read_bytes()).hexdigest(),
                        "preset": chosen}}
    if stats is not None:
        mean, std = read_stats_pickle(stats[0]), read_stats_pickle(stats[1])
        if (std <= 0).any():
            raise KerasImportError(f"{stats[1]}: {int((std <= 0).sum())} standard deviations are not positive")
        state["stats"] = {"mean": mean, "std": std}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: torch.save(state, tmp))
    return {"config": cfg, "preset": chosen, "differs": differs, "late_dropout_step": int(sd["late_dropout.step"]),
            "stats": stats is not None, "parameters": sum(p.numel() for p in model.parameters())}


# --------------------------------------------------------------------------------------------
# The 2nd place's network (SECOND-PLACE-SPEC 3): its `save_weights` h5 of `get_model`
# --------------------------------------------------------------------------------------------

#: the top-level layers of the 2nd place's model that carry weights
SECOND_PLACE_PARTS = ("encoder", "att_decoder", "ctc_decoder")


def read_h5_submodels(path: Path) -> dict[str, list[Layer]]:
    """The layers of each sub-model group of a Keras 2 h5 (a model whose top-level layers are
    models, as the 2nd place's encoder and decoders are): per group, its layers in the order of
    their datasets, each layer's weights by their last name part (repeats numbered: `kernel`,
    `kernel_1`, ...)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise KerasImportError(f"{path}: not an HDF5 file (expected a Keras 2 save_weights .h5)")
    parts: dict[str, list[Layer]] = {}
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in root.attrs:
                raise KerasImportError(f"{path}: no 'layer_names' attribute: not a Keras 2 weights file")
            for gname in map(_text, root.attrs["layer_names"]):
                group = root[gname]
                layers: dict[str, Layer] = {}
                for wname in (_text(w) for w in group.attrs.get("weight_names", [])):
                    lname = wname.split("/", 1)[0]
                    layer = layers.setdefault(lname, Layer(lname, {}))
                    stem = key = wname.rsplit("/", 1)[-1].split(":")[0]
                    k = 1
                    while key in layer.weights:
                        key, k = f"{stem}_{k}", k + 1
                    arr = np.asarray(group[wname][()])
                    if arr.dtype.kind not in "fiu":
                        raise KerasImportError(f"{path}: {gname}/{wname} is {arr.dtype}, not numbers")
                    layer.weights[key] = arr
                    layer.paths[key] = f"{gname}/{wname}"
                if layers:
                    parts[gname] = list(layers.values())
    except KerasImportError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise KerasImportError(f"{path}: unreadable HDF5 ({first_line(e, 160)}); truncated or damaged?") from None
    return parts


def is_second_place_h5(path: Path) -> bool:
    """Whether a weights file has the 2nd place's three sub-models (else: the seed's layout)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            names = {_text(n) for n in root.attrs.get("layer_names", [])}
    except OSError:
        return False
    return set(SECOND_PLACE_PARTS) <= names


def _gru_gates(w: np.ndarray, dim: int) -> np.ndarray:
    """Keras' GRU gate blocks [z, r, h] along the last axis -> PyTorch's [r, z, n]."""
    z, r, h = w[..., :dim], w[..., dim:2 * dim], w[..., 2 * dim:]
    return np.concatenate([r, z, h], axis=-1)


def second_place_state_dict(path: Path, layers: str) -> tuple[dict, dict[str, torch.Tensor], dict[str, str]]:
    """Read the 2nd place's h5 against its network; returns the architecture read from the file
    (width, vocabulary, kernel size, expansions, decoder blocks; `layers` names where the stride-2
    block is, which weights cannot tell), a state dict for `CTCAttentionModel`, and for each
    BatchNorm statistic in it the h5 dataset it came from."""
    path = Path(path)
    parts = read_h5_submodels(path)
    missing = [p for p in SECOND_PLACE_PARTS if p not in parts]
    if missing:
        raise KerasImportError(f"{path}: no {', '.join(missing)} sub-model: not the 2nd place's network "
                               f"(it has {', '.join(parts) or 'no layers with weights'})")
    sd: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    enc = {layer.name: layer for layer in parts["encoder"]}

    def take(group: dict[str, Layer], name: str, what: str) -> Layer:
        if name not in group:
            raise KerasImportError(f"{path}: no layer {name!r} ({what}) in the encoder")
        return group[name]

    stem = take(enc, "stem_conv", "the stem Dense").get("kernel")
    if stem.ndim != 2 or stem.shape[0] != 1629:
        raise KerasImportError(f"{path}: layer 'stem_conv' kernel has shape {stem.shape}, expected (1629, width)")
    dim = int(stem.shape[1])
    sd["encoder.stem.weight"] = _linear(stem)

    def bn(layer: Layer, prefix: str, width: int) -> None:
        _batch_norm(sd, layer, prefix, width, sources)

    ecas = [layer for layer in parts["encoder"] if re.fullmatch(r"eca(_\d+)?", layer.name)]
    norms = [layer for layer in parts["encoder"] if re.fullmatch(r"batch_normalization(_\d+)?", layer.name)]
    n_conv = sum(1 for name in enc if re.fullmatch(r"\d+_expand_conv", name))
    n_attn = sum(1 for name in enc if re.fullmatch(r"\d+_mhsa", name))
    if layers.count("C") + layers.count("D") != n_conv or layers.count("T") != n_attn:
        raise KerasImportError(f"{path}: holds {n_conv} conv and {n_attn} transformer blocks; the preset's layers "
                               f"{layers!r} have {layers.count('C') + layers.count('D')} and {layers.count('T')}")
    if len(ecas) != n_conv or len(norms) != 1:
        raise KerasImportError(f"{path}: {len(ecas)} ECA layers for {n_conv} conv blocks and {len(norms)} final "
                               f"BatchNormalization layers (expected 1)")
    hidden = kernel = ffn = None
    conv = attn = 0
    for i, kind in enumerate(layers):
        prefix = f"encoder.blocks.{i}"
        if kind in "CD":
            conv += 1
            n = conv
            bn(take(enc, f"{n}pre_bn", f"block {n}'s BatchNormalization"), f"{prefix}.pre_bn", dim)
            expand = take(enc, f"{n}_expand_conv", f"block {n}'s expanding Dense")
            hidden = hidden or int(expand.get("kernel").shape[-1])
            sd[f"{prefix}.expand.weight"] = _linear(expand.get("kernel", (dim, hidden)))
            sd[f"{prefix}.expand.bias"] = _t(expand.get("bias", (hidden,)))
            dk = take(enc, f"{n}_dwconv", f"block {n}'s depthwise conv").get("depthwise_kernel")
            kernel = kernel or int(dk.shape[0])
            if dk.shape != (kernel, hidden, 1):
                raise KerasImportError(f"{path}: layer '{n}_dwconv' depthwise_kernel has shape {dk.shape}, "
                                       f"expected ({kernel}, {hidden}, 1)")
            sd[f"{prefix}.depthwise.weight"] = _t(dk[:, :, 0].T[:, None, :])
            bn(take(enc, f"{n}conv_bn", f"block {n}'s second BatchNormalization"), f"{prefix}.bn", hidden)
            sd[f"{prefix}.eca.conv.weight"] = _t(ecas[n - 1].get("kernel", (5, 1, 1))[:, 0, 0][None, None, :])
            project = take(enc, f"{n}_project_conv", f"block {n}'s projecting Dense")
            sd[f"{prefix}.project.weight"] = _linear(project.get("kernel", (hidden, dim)))
            sd[f"{prefix}.project.bias"] = _t(project.get("bias", (dim,)))
        else:
            attn += 1
            m = attn
            bn(take(enc, f"{m}_bn1", f"transformer {m}'s first BatchNormalization"), f"{prefix}.bn1", dim)
            mhsa = take(enc, f"{m}_mhsa", f"transformer {m}'s attention")
            sd[f"{prefix}.attn.qkv.weight"] = _linear(mhsa.get("kernel", (dim, 3 * dim)))
            sd[f"{prefix}.attn.out.weight"] = _linear(mhsa.get("kernel_1", (dim, dim)))
            bn(take(enc, f"{m}bn2", f"transformer {m}'s second BatchNormalization"), f"{prefix}.bn2", dim)
            fc1 = take(enc, f"{m}_fc1", f"transformer {m}'s first feed-forward Dense")
            ffn = ffn or int(fc1.get("kernel").shape[-1])
            sd[f"{prefix}.fc1.weight"] = _linear(fc1.get("kernel", (dim, ffn)))
            sd[f"{prefix}.fc2.weight"] = _linear(take(enc, f"{m}_fc2", f"transformer {m}'s second feed-forward Dense")
                                                .get("kernel", (ffn, dim)))
    bn(norms[0], "encoder.norm", dim)

    dec = {layer.name: layer for layer in parts["att_decoder"]}

    def dtake(name: str, what: str) -> Layer:
        if name not in dec:
            raise KerasImportError(f"{path}: no layer {name!r} ({what}) in the attention decoder")
        return dec[name]

    classifier = dtake("att_decoder_classifier", "the classifier")
    vocab = int(classifier.get("kernel").shape[-1])
    sd["decoder.classifier.weight"] = _linear(classifier.get("kernel", (dim, vocab)))
    sd["decoder.classifier.bias"] = _t(classifier.get("bias", (vocab,)))
    sd["decoder.token.weight"] = _t(dtake("att_decoder_token_emb", "the token embedding").get("embeddings", (vocab, dim)))
    position = dtake("att_decoder_pos_emb", "the position embedding").get("embeddings")
    if position.shape != (64, dim):
        raise KerasImportError(f"{path}: layer 'att_decoder_pos_emb' embeddings have shape {position.shape}, "
                               f"expected (64, {dim})")
    sd["decoder.position.weight"] = _t(position)
    blocks = sorted({int(m.group(1)) for name in dec if (m := re.fullmatch(r"att_decoder_block(\d+)_bn1", name))})
    if blocks != list(range(1, len(blocks) + 1)) or not blocks:
        raise KerasImportError(f"{path}: the attention decoder's blocks are numbered {blocks}, expected 1..n")
    for b in blocks:
        prefix, name = f"decoder.blocks.{b - 1}", f"att_decoder_block{b}"
        for k in (1, 2, 3):
            bn(dtake(f"{name}_bn{k}", f"decoder block {b}'s BatchNormalization {k}"), f"{prefix}.bn{k}", dim)
        for part in ("self_attn", "cross_attn"):
            layer = dtake(f"{name}_{part}", f"decoder block {b}'s {part}")
            for key, ours in (("kernel", "q"), ("kernel_1", "k"), ("kernel_2", "v"), ("kernel_3", "out")):
                sd[f"{prefix}.{part}.{ours}.weight"] = _linear(layer.get(key, (dim, dim)))
        fc1 = dtake(f"{name}_fc1", f"decoder block {b}'s first feed-forward Dense")
        ffn = ffn or int(fc1.get("kernel").shape[-1])  # (an encoder without transformer blocks)
        sd[f"{prefix}.fc1.weight"] = _linear(fc1.get("kernel", (dim, ffn)))
        sd[f"{prefix}.fc2.weight"] = _linear(dtake(f"{name}_fc2", f"decoder block {b}'s second feed-forward Dense")
                                             .get("kernel", (ffn, dim)))

    ctc = parts["ctc_decoder"]
    names = [layer.name for layer in ctc]
    if names[:1] != ["rnn"] or "ctc_classifier" not in names or len(ctc) != 3:
        raise KerasImportError(f"{path}: the CTC head has layers {names}, expected rnn, a Dense and ctc_classifier")
    gru, hidden_dense, out = ctc[0], ctc[1], next(layer for layer in ctc if layer.name == "ctc_classifier")
    sd["ctc.gru.rnn.weight_ih_l0"] = _linear(_gru_gates(gru.get("kernel", (dim, 3 * dim)), dim))
    sd["ctc.gru.rnn.weight_hh_l0"] = _linear(_gru_gates(gru.get("recurrent_kernel", (dim, 3 * dim)), dim))
    bias = _gru_gates(gru.get("bias", (2, 3 * dim)), dim)
    sd["ctc.gru.rnn.bias_ih_l0"], sd["ctc.gru.rnn.bias_hh_l0"] = _t(bias[0]), _t(bias[1])
    sd["ctc.hidden.weight"] = _linear(hidden_dense.get("kernel", (dim, 2 * dim)))
    sd["ctc.hidden.bias"] = _t(hidden_dense.get("bias", (2 * dim,)))
    sd["ctc.out.weight"] = _linear(out.get("kernel", (2 * dim, vocab)))
    sd["ctc.out.bias"] = _t(out.get("bias", (vocab,)))
    arch = {"vocab": vocab, "dim": dim, "layers": layers, "kernel_size": kernel, "conv_expand": hidden // dim,
            "ffn_expand": ffn // dim, "decoder_blocks": len(blocks)}
    return arch, sd, sources


def import_second_place(h5: Path, out: Path, preset_name: str = "second-place") -> dict:
    """Write an aslfr checkpoint from the 2nd place's `save_weights` h5 (its published
    `*-last.h5`, say); the settings the file lacks (heads, where the stride-2 block is, dropout)
    come from `preset_name`."""
    import dataclasses

    from aslfr.files import atomic_write
    from aslfr.joint_training import build_model

    base = preset(preset_name)
    if base.network != "ctc-attention":
        raise KerasImportError(f"{h5}: holds the 2nd place's network; --preset {preset_name} is another family's")
    arch, sd, _ = second_place_state_dict(h5, base.layers)
    if arch["vocab"] != len(base.charmap) + 3:
        raise KerasImportError(f"{h5}: its classifier has {arch['vocab']} outputs; the competition's 59 characters "
                               f"with pad, SOS and EOS make {len(base.charmap) + 3}")
    cfg = dataclasses.replace(base, dim=arch["dim"], kernel_sizes=(arch["kernel_size"],),
                              expand=arch["conv_expand"], ffn_expand=arch["ffn_expand"],
                              decoder_blocks=arch["decoder_blocks"])
    try:
        cfg.check()
    except ValueError as e:
        raise KerasImportError(f"{h5}: the network read from the file does not fit the preset: {e}") from None
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:  # the walk covers the network: this is a bug, not bad input
        raise RuntimeError(f"keras import left {missing} unset and {unexpected} unused")
    state = {"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 0, "step": 0,
             "source": {"keras_h5": str(h5), "sha256": hashlib.sha256(h5.read_bytes()).hexdigest(),
                        "preset": preset_name}}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: torch.save(state, tmp))
    differs = {k: (getattr(cfg, k), getattr(base, k)) for k in ("dim", "kernel_sizes", "expand", "ffn_expand",
                                                                   "decoder_blocks") if getattr(cfg, k) != getattr(base, k)}
    return {"config": cfg, "preset": preset_name, "differs": differs, "late_dropout_step": 0, "stats": True,
            "parameters": sum(p.numel() for p in model.parameters()), "network": "ctc-attention"}


__all__ = ["KerasImportError", "import_keras", "import_second_place", "is_second_place_h5", "keras_state_dict", "read_h5_layers",
           "read_h5_submodels", "read_stats_pickle", "second_place_state_dict"]
