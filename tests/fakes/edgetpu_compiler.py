"""FAKE ``edgetpu_compiler``, for tests only (the real one is a closed x86-64 binary from
Google's Coral apt repository and cannot be installed here).

It behaves like the real compiler where edgecnn depends on it:

* the command line ``edgetpu_compiler [-s] -o OUT_DIR MODEL`` (``-s`` adds the operator
  table to stdout);
* the output ``OUT_DIR/<name>_edgetpu.tflite`` is a real TFLite flatbuffer in which every
  operation of subgraph 0 is replaced by ONE ``CUSTOM`` operator with custom code
  ``edgetpu-custom-op`` whose inputs and outputs are the graph's inputs and outputs --
  the shape of a fully mapped real compile. The weights' buffers are emptied (the real
  compiler moves them into the op's ``custom_options`` executable; here that payload is
  only a marker). The flatbuffer is re-serialized, so its ``TFLITE_METADATA`` entry stays
  but the associated files (labels) packed as a zip after the flatbuffer are lost, as
  with any tool that re-packs the flatbuffer (``FAKE_EDGETPU_MODE=strip-metadata`` drops
  the entry too, as older compilers did); edgecnn must carry the metadata over either way;
* stdout and ``OUT_DIR/<name>_edgetpu.log`` in the real compiler's formats (summary
  block, ``Operator Count Status`` table), built from the model's own operator counts;
* ``edgetpu_compiler --version`` prints ``Edge TPU Compiler version X`` (the build
  stage's cache key holds it).

What it cannot do: decide which operations the Edge TPU supports (it maps all of them),
or produce an executable the TPU can run: the compiled file only loads on a real Edge TPU
with the real ``libedgetpu``.

Knobs for tests (environment):
    FAKE_EDGETPU_MODE     ``compile`` (default), ``copy`` (write the input unchanged, like
                          a compiler that mapped nothing: edgecnn must refuse it),
                          ``truncate`` (write half the compiled file: a broken install),
                          ``strip-metadata`` (compile, but drop the model metadata).
    FAKE_EDGETPU_LOG      a file whose text (``{model}``, ``{out}``, ``{stem}`` filled in)
                          is printed instead of the generated stdout; a text containing
                          "Internal compiler error" makes the compile fail (exit 1).
    FAKE_EDGETPU_LOGFILE  a file whose text replaces the generated ``.log``.
    FAKE_EDGETPU_VERSION  the version it prints (default 16.0.384591198), so a test
                          can "upgrade" the compiler.
"""

import os
import sys

import flatbuffers
from ai_edge_litert import schema_py_generated as schema

VERSION = os.environ.get("FAKE_EDGETPU_VERSION", "16.0.384591198")
CUSTOM_CODE = "edgetpu-custom-op"
ON_CHIP_BYTES = 8 * 1024 * 1024 - 32 * 1024  # what a USB Accelerator reports as available
_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if isinstance(v, int) and not k.startswith("_")}


def _size(n):
    """Bytes as the compiler prints them: 0.00B, 2.55KiB, 7.97MiB."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return "%.2f%s" % (n / scale, unit)
    return "%.2fB" % n


def _op_counts(model):
    counts = {}
    for op in model.subgraphs[0].operators or []:
        code = model.operatorCodes[op.opcodeIndex]
        number = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = _OP_NAMES.get(number, "BUILTIN_%d" % number)
        counts[name] = counts.get(name, 0) + 1
    return counts


def _table(counts):
    rows = ["", "Operator                       Count      Status", ""]
    for name, count in counts.items():
        rows.append("%-30s %-10d %s" % (name, count, "Mapped to Edge TPU"))
    return "\n".join(rows) + "\n"


def compile_model(model, strip_metadata):
    """Replace subgraph 0's operators by one edgetpu-custom-op; return the weight bytes moved."""
    graph = model.subgraphs[0]
    used_by_io = {int(i) for i in graph.inputs} | {int(i) for i in graph.outputs}
    moved = 0
    metadata_buffers = {m.buffer for m in model.metadata or []}
    for i, tensor in enumerate(graph.tensors):
        if i in used_by_io or tensor.buffer in metadata_buffers or not tensor.buffer:
            continue
        buffer = model.buffers[tensor.buffer]
        if buffer.data is not None and len(buffer.data):
            moved += len(buffer.data)
            buffer.data = None  # the real compiler moves the weights into the executable
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = CUSTOM_CODE
    code.version = 1
    op = schema.OperatorT()
    op.opcodeIndex = 0
    op.inputs = [int(i) for i in graph.inputs]
    op.outputs = [int(i) for i in graph.outputs]
    op.customOptions = list(b"FAKE-EDGETPU-EXECUTABLE")  # the real one holds the TPU program
    model.operatorCodes = [code]
    graph.operators = [op]
    if strip_metadata:
        model.metadata = None
    return moved


def main(argv):
    if argv == ["--version"]:
        sys.stdout.write("Edge TPU Compiler version %s\n" % VERSION)
        return 0
    show_table = "-s" in argv
    args = [a for a in argv if a != "-s"]
    if len(args) != 3 or args[0] != "-o":
        sys.stderr.write("usage: edgetpu_compiler [-s] -o OUT_DIR MODEL (fake: got %r)\n" % (argv,))
        return 2
    out, model_path = args[1], args[2]
    stem = os.path.splitext(os.path.basename(model_path))[0]
    produced = os.path.join(out, stem + "_edgetpu.tflite")
    log_path = os.path.join(out, stem + "_edgetpu.log")
    fill = dict(model=model_path, out=out, stem=stem)
    given = os.environ.get("FAKE_EDGETPU_LOG")
    given_text = open(given).read().format(**fill) if given else None
    if given_text is not None and "Internal compiler error" in given_text:
        sys.stdout.write(given_text)
        return 1

    data = open(model_path, "rb").read()
    mode = os.environ.get("FAKE_EDGETPU_MODE", "compile")
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    counts = _op_counts(model)
    moved = 0
    if mode == "copy":
        output = data
    else:
        moved = compile_model(model, strip_metadata=mode == "strip-metadata")
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        output = bytes(builder.Output())
        if mode == "truncate":
            output = output[:len(output) // 2]
    with open(produced, "wb") as fh:
        fh.write(output)

    total = sum(counts.values())
    summary = "".join((
        "Model compiled successfully in 41 ms.\n\n",
        "Input model: %s\n" % model_path,
        "Input size: %s\n" % _size(len(data)),
        "Output model: %s\n" % produced,
        "Output size: %s\n" % _size(len(output)),
        "On-chip memory used for caching model parameters: %s\n" % _size(moved),
        "On-chip memory remaining for caching model parameters: %s\n" % _size(ON_CHIP_BYTES - moved),
        "Off-chip memory used for streaming uncached model parameters: 0.00B\n",
        "Number of Edge TPU subgraphs: 1\n",
        "Total number of operations: %d\n" % total,
        "Operation log: %s\n" % log_path,
    ))
    if given_text is not None:
        sys.stdout.write(given_text)
    else:
        sys.stdout.write("Edge TPU Compiler version %s\nStarted a compilation timeout timer of 180 seconds.\n\n"
                         % VERSION + summary + (_table(counts) if show_table else "")
                         + "Compilation child process completed within timeout period.\nCompilation succeeded! \n")
    given_log = os.environ.get("FAKE_EDGETPU_LOGFILE")
    with open(log_path, "w") as fh:
        if given_log:
            fh.write(open(given_log).read().format(**fill))
        else:
            fh.write("Edge TPU Compiler version %s\nInput: %s\nOutput: %s\n" % (VERSION, model_path, produced)
                     + _table(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
