"""ONNX -> TFLite, run inside the isolated converter environment (onnx2tf, TensorFlow).

    python tflite_convert.py MODEL.onnx OUT_DIR

Writes OUT_DIR/model_float32.tflite, model_float16.tflite and model_int8.tflite (dynamic-range
int8 weights), each with the signature `serving_default(inputs [T, W]) -> outputs`, builtin
ops only, where W is the ONNX input's width (200 for the on-device model). This file imports
nothing from aslfr: the converter environment pins its own TensorFlow and NumPy and does not
hold the project's dependencies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def drop_identity_transposes(data: bytes) -> bytes:
    """The model with every TRANSPOSE whose permutation is the identity removed, its readers
    rewired to its input. onnx2tf leaves one such op (a plain copy of the [T, 768] activation)
    after each conv block's channel-attention multiply; nothing else changes."""
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    transpose = [i for i, c in enumerate(model.operatorCodes)
                 if max(c.builtinCode, c.deprecatedBuiltinCode) == schema.BuiltinOperator.TRANSPOSE]
    for graph in model.subgraphs:
        kept = []
        for op in graph.operators:
            if op.opcodeIndex in transpose and op.outputs[0] not in list(graph.outputs):
                perm_tensor = graph.tensors[op.inputs[1]]
                raw = model.buffers[perm_tensor.buffer].data  # empty unless a constant
                dtype = {schema.TensorType.INT32: np.int32, schema.TensorType.INT64: np.int64}.get(perm_tensor.type)
                perm = np.frombuffer(bytes(bytearray(raw)), dtype) if raw is not None and dtype else None
                if perm is not None and len(perm) and (perm == np.arange(len(perm))).all():
                    src, dst = op.inputs[0], op.outputs[0]
                    for reader in graph.operators:
                        reader.inputs = [src if i == dst else i for i in reader.inputs]
                    continue
            kept.append(op)
        graph.operators = kept
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def main(onnx_path: str, out_dir: str) -> None:
    import onnx
    import tensorflow as tf

    width = onnx.load(onnx_path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim[1].dim_value
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")  # onnx2tf calls onnxsim
    with tempfile.TemporaryDirectory(prefix="aslfr-onnx2tf-") as tmp:
        work = Path(tmp)
        shutil.copy(onnx_path, work / "model.onnx")  # onnx2tf rewrites its input
        cmd = [str(bin_dir / "onnx2tf"), "-i", str(work / "model.onnx"), "-kat", "inputs", "-osd",
               "-rtpo", "Erf", "-o", str(work / "tf")]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
        if run.returncode != 0:
            sys.stderr.write(run.stdout[-4000:] + run.stderr[-4000:])
            raise SystemExit(f"onnx2tf failed on {onnx_path} (exit {run.returncode})")
        loaded = tf.saved_model.load(str(work / "tf"))
        fn = loaded.signatures["serving_default"]
        in_name = list(fn.structured_input_signature[1].keys())[0]

        class Wrapped(tf.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = loaded

            @tf.function(input_signature=[tf.TensorSpec([None, width], tf.float32, name="inputs")])
            def serve(self, inputs):
                result = fn(**{in_name: inputs})
                return {"outputs": list(result.values())[0]}

        wrapped = Wrapped()
        saved = work / "signed"
        tf.saved_model.save(wrapped, str(saved), signatures={"serving_default": wrapped.serve})
        for variant in ("float32", "float16", "int8"):
            conv = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serving_default"])
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            # a GRU's WHILE loop keeps its steps in tensor lists: batch 1 makes their element
            # shape static, which the builtin ops need (the 2nd place's converter setting too)
            conv._experimental_default_to_single_batch_in_tensor_list_ops = True
            if variant != "float32":
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
            if variant == "float16":
                conv.target_spec.supported_types = [tf.float16]
            data = drop_identity_transposes(conv.convert())
            target = out / f"model_{variant}.tflite"
            part = target.with_suffix(".tflite.partial")
            part.write_bytes(data)
            part.replace(target)
            print(f"{target} {len(data)} bytes", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
