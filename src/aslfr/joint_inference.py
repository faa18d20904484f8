"""The 2nd place's family on the device: raw columns in, decoded characters out, in one
exportable module, with its decoder inside the graph (SECOND-PLACE-SPEC 6-7).

    inputs [T, 1629] float32: Kaggle's columns in their parquet order (`LANDMARK_COLUMNS`: every
        x, then y, then z; NaN = not detected; T may be 0)
      -> `ctc_attention.preprocess_exportable` (the training code's preprocessing, with the kept
         frames first in a buffer instead of a data-dependent shape)
      -> each model's encoder over that buffer, masked to its valid frames (the stride-2 conv
         padded for the valid length, as the unpadded network pads it)
      -> CTC greedy, attention greedy or joint CTC/attention greedy (`aslfr.decoding`'s
         algorithms; several models averaged per step)
      -> outputs [rows, characters + 1]: row i's argmax is the i-th decoded character, the rows
         after the last character blank (the last class), as the seed's on-device model.

No Python branch depends on the data: the greedy searches are unrolled over their 64 steps,
each step computed and its output kept only while the search runs (k < min(64, L), no EOS yet),
so the graph keeps T dynamic and converts to builtin TFLite ops (the CTC head's GRU becomes one
WHILE). Everything runs in float32; the Python decoder (`aslfr.decoding.decode`, float64 prefix
scores) is the reference the tests hold it to.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from aslfr.ctc_attention import MAX_TOKENS, N_INPUTS, CTCAttentionModel, SameDepthwiseConv, preprocess_exportable
from aslfr.decoding import NEG, check_decoding, frames, logcumsumexp_scan, prefix_extend, prefix_psi, previous, specials
from aslfr.inference import compact_rows


class JointInferenceModule(nn.Module):
    def __init__(self, models: list[CTCAttentionModel], max_frames: int, decoding: str = "joint",
                 ctc_weight: float = 0.2, max_tokens: int = MAX_TOKENS) -> None:
        super().__init__()
        check_decoding(models, decoding, ctc_weight, max_tokens)
        self.max_tokens = max_tokens
        vocab = models[0].net.vocab
        # copies: the settings below are the graph's, the models passed in stay as they are
        self.models = nn.ModuleList(copy.deepcopy(m).eval() for m in models)
        for module in self.modules():
            if isinstance(module, SameDepthwiseConv):
                module.on_device = True
        for model in self.models:
            for block in model.encoder.blocks:
                if hasattr(block, "eca"):
                    block.eca.use_band(block.project.in_features)
            # time-major in: the ONNX GRU's own layout, with no transpose before it (onnx2tf
            # dropped that transpose and its TFLite loop then read the batch as the time)
            model.ctc.gru.rnn.batch_first = False
        self.max_frames = max_frames
        self.decoding = "attention" if decoding == "joint" and ctc_weight == 0 else decoding
        self.ctc_weight = float(ctc_weight)
        self.pad, self.sos, self.eos = specials(vocab)
        self.classes = vocab - 2               # the characters (ids 1..vocab-3) and the blank, last
        ids = torch.arange(vocab)
        self.register_buffer("not_output", (ids == self.pad) | (ids == self.sos), persistent=False)
        # the prefix scans' block of log-0 rows, one constant for all of them (made per scan, the
        # export held 128 copies: 12 MB at 768 frames)
        self.register_buffer("scan_head", torch.full(((max_frames + 1) // 2, vocab), NEG), persistent=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # T = 0 becomes one all-NaN frame (dropped again by the preprocessing), written from the data
        x = torch.cat([inputs, inputs.new_full((1, N_INPUTS), float("nan"))], 0)
        feats, found = preprocess_exportable(x, self.max_frames)              # found: any frame kept
        encoded = []
        for model in self.models:
            memory, _, _ = model.encode(feats[None])
            # CTC log-probabilities [L, V] where a decoder reads them (attention alone does not)
            logp = self._ctc_logp(model, memory, x.shape[0]) if self.decoding != "attention" else None
            encoded.append((model, memory, logp))
        length = torch.ones_like(encoded[0][1][0, :, 0]).sum().to(torch.int64)  # L, from the data
        if self.decoding == "ctc":
            return self._ctc(torch.stack([e[2] for e in encoded]).mean(0), found)
        return self._greedy(encoded, length, found)

    @staticmethod
    def _ctc_logp(model: CTCAttentionModel, memory: torch.Tensor, padded: int) -> torch.Tensor:
        """The CTC head's log-probabilities [Lb, V]. Its GRU runs over the memory padded with
        zero steps to `padded`, the input's T + 1: over a length the exporter derives by
        halving or capping T (ceil(min(T + 1, max_frames) / 2)) it decomposes the GRU into a
        Python loop and fails, over T + 1 it keeps one ONNX GRU, which becomes one TFLite WHILE.
        Being unidirectional, the steps after Lb change nothing before them; they cost T + 1 - Lb
        more recurrent steps (the GRU's share of the latency, README)."""
        # gathers sized from the tensors themselves, not from the exporter's symbolic length
        # (which TFLite computed one step short for an odd n): the GRU's input repeats the last
        # step after L, and its first L outputs are read back
        steps = frames(memory[0])                                                            # 0..L-1
        spread = torch.minimum(torch.arange(padded, device=memory.device), steps.max())      # [padded]
        head = model.ctc
        # batch 1: time-major by a reshape, which onnx2tf keeps (a transpose it dropped)
        out = head.gru.rnn(memory[0].index_select(0, spread).reshape(padded, 1, -1))[0].reshape(padded, -1)
        return torch.log_softmax(head.out(head.hidden(out.index_select(0, steps))), -1)

    def _ctc(self, logp: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
        best = logp.argmax(-1)                                                  # [Lb]
        t = frames(best)
        keep = ((t == 0) | (best != previous(best, t))) & self._is_char(best) & found
        return compact_rows(best - 1, keep, self.classes)

    def _is_char(self, ids: torch.Tensor) -> torch.Tensor:
        """Comparisons, not a lookup: a gather from a bool table is an op version tflite-runtime
        2.14 lacks."""
        return (ids > self.pad) & (ids < self.sos)

    def _best(self, score: torch.Tensor) -> torch.Tensor:
        return torch.where(self.not_output, float("-inf"), score).argmax(-1, keepdim=True)  # [1]

    def _greedy(self, encoded: list, length: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
        joint = self.decoding == "joint"
        caches = [model.decoder.start(memory[0]) for model, memory, _ in encoded]
        if joint:
            # the head's ceil(max_frames / 2) rows bound the encoder's L, and so the scan's steps
            head = self.scan_head
            lcse = lambda x, dim: logcumsumexp_scan(x, head.shape[0], head)  # noqa: E731 (dim 0 only)
            states = []
            for _, _, P in encoded:
                A = torch.cumsum(P, 0)
                states.append([P, A, torch.full_like(P[:, 0], NEG), A[:, 0]])
        # SOS written from the data: as a constant, the first step's embedding and everything
        # that follows from it alone fold into constants, which onnx2tf cannot make a model output
        token = (length * 0 + self.sos).reshape(1)
        running = found.reshape(1)
        out, kept = [], []
        for k in range(self.max_tokens):
            running = running & (k < length)
            att = []
            for i, (model, _, _) in enumerate(encoded):
                logits, caches[i] = model.decoder.step(token, k, caches[i])
                att.append(torch.log_softmax(logits[0], -1))
            score = torch.stack(att).mean(0)                                    # [V]
            if joint:
                last = (torch.arange(score.shape[0], device=score.device) == token) & (k > 0)
                psis, extended = [], []
                for P, A, rn, rb in states:
                    terms, total, rn2, rb2 = prefix_extend(P, A, rn, rb, last, k == 0, lcse=lcse)
                    psis.append(prefix_psi(terms, total, self.eos))
                    extended.append((rn2, rb2))
                score = (1 - self.ctc_weight) * score + self.ctc_weight * torch.stack(psis).mean(0)
            token = self._best(score)
            if joint:
                for state, (rn2, rb2) in zip(states, extended):
                    state[2] = rn2.index_select(1, token)[:, 0]
                    state[3] = rb2.index_select(1, token)[:, 0]
            out.append(token)
            kept.append(running & self._is_char(token))
            running = running & (token != self.eos)
        ids = torch.cat(out)
        return compact_rows(ids - 1, torch.cat(kept), self.classes)


def build(checkpoints, decoding: str = "joint", ctc_weight: float = 0.2, max_frames: int | None = None,
          max_tokens: int = MAX_TOKENS, device: str = "cpu"):
    """The on-device module of one or more training (or import-keras) checkpoints of the 2nd
    place's family, decoded together; (module, the first checkpoint's Config)."""
    from aslfr.checkpoints import load_model

    models, configs = [], []
    for checkpoint in checkpoints:
        model, cfg, _ = load_model(checkpoint, device)
        if cfg.network != "ctc-attention":
            raise ValueError(f"{checkpoint}: holds the seed's network, not the 2nd place's: export it alone, "
                             f"without --decoding")
        models.append(model)
        configs.append(cfg)
    first = configs[0]
    for checkpoint, cfg in zip(checkpoints[1:], configs[1:]):
        if cfg.charmap.to_mapping() != first.charmap.to_mapping():
            raise ValueError(f"{checkpoint}: its character map is not {checkpoints[0]}'s: they cannot decode together")
    # the networks saw at most max_len frames in training; export may only lower that
    frames = min([max_frames or c.max_len for c in configs] + [c.max_len for c in configs])
    module = JointInferenceModule(models, frames, decoding, ctc_weight, max_tokens)
    module.sources = [str(m.source) for m in models]
    return module, first


__all__ = ["JointInferenceModule", "build"]
