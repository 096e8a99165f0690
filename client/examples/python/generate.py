#!/usr/bin/env python3
"""Streams a completion from nanoserve-decode over gRPC with Debian's
python3-grpcio. The stubs are generated from protos/ at start (with
python3-grpc-tools' grpc_tools.protoc) into a temporary directory:

  python3 client/examples/python/generate.py --target 127.0.0.1:50053 \\
      --prompt "Hello" [--max_new_tokens 16] [--json]

Prints the text as it streams and a summary; --json prints one JSON object
at the end instead: {"output_ids", "text", "finish_reason", "usage"}.
"""
import argparse
import json
import os
import sys
import tempfile

from grpc_tools import protoc

import grpc

PROTOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "protos")


def load_stubs(out_dir):
    """Generates the nanoserve.v1 stubs into out_dir and imports them."""
    files = [os.path.join(PROTOS, "nanoserve", "v1", f) for f in ("common.proto", "decode.proto")]
    if protoc.main(["protoc", "-I" + PROTOS, "--python_out=" + out_dir,
                    "--grpc_python_out=" + out_dir] + files) != 0:
        sys.exit("generate.py: protoc failed on " + PROTOS)
    sys.path.insert(0, out_dir)
    from nanoserve.v1 import decode_pb2, decode_pb2_grpc  # pylint: disable=import-outside-toplevel
    return decode_pb2, decode_pb2_grpc


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50053")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--prompt_ids", default="", help="comma-separated token ids")
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.add_argument("--ignore_eos", action="store_true")
    parser.add_argument("--timeout_s", type=float, default=600)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as stubs:
        decode_pb2, decode_pb2_grpc = load_stubs(stubs)
        request = decode_pb2.GenerateRequest(
            prompt=args.prompt, max_new_tokens=args.max_new_tokens, ignore_eos=args.ignore_eos,
            prompt_ids=[int(t) for t in args.prompt_ids.split(",") if t])
        ids, text, finished = [], "", None
        with grpc.insecure_channel(args.target) as channel:
            stub = decode_pb2_grpc.DecodeStub(channel)
            try:
                for message in stub.Generate(request, timeout=args.timeout_s):
                    if message.HasField("token"):
                        ids.append(message.token.id)
                        text += message.token.text
                        if not args.json:
                            print(message.token.text, end="", flush=True)
                    else:
                        finished = message.finished
                        text += finished.trailing_text
            except grpc.RpcError as error:
                sys.exit("generate.py: %s: %s" % (error.code().name, error.details()))
    usage = finished.usage
    summary = {"prompt_tokens": usage.prompt_tokens, "cached_prompt_tokens":
               usage.cached_prompt_tokens, "output_tokens": usage.output_tokens}
    if args.json:
        print(json.dumps({"output_ids": ids, "text": text,
                          "finish_reason": finished.finish_reason, "usage": summary}))
    else:
        print("\n[%s; %s; TTFT %.1f ms]" % (finished.finish_reason, summary,
                                            finished.timings.ttft_ms))


if __name__ == "__main__":
    main()
