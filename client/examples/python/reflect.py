#!/usr/bin/env python3
"""Lists and calls a nanoserve service through gRPC server reflection alone,
as generic tools (grpcurl, grpc_cli, Postman) do: no nanoserve protos. The
reflection protocol's own stubs are generated at start from Debian's
grpc-proto package (/usr/share/grpc-proto) with grpc_tools.protoc.

  python3 client/examples/python/reflect.py --target 127.0.0.1:50053
      # each service, and each method with its request and response types
  python3 client/examples/python/reflect.py --target 127.0.0.1:50053 \\
      --generate_prompt_ids 1,2,3 --max_new_tokens 4
      # builds a nanoserve.v1.GenerateRequest from the reflected descriptors,
      # calls Decode.Generate and prints the streamed token ids as JSON
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_tools import protoc

import grpc

GRPC_PROTO = os.environ.get("GRPC_PROTO_DIR", "/usr/share/grpc-proto")
REFLECTION = "grpc/reflection/v1alpha/reflection.proto"


def load_reflection_stubs(out_dir):
    """Generates the reflection protocol's stubs into out_dir and imports them.
    The .proto is copied to out_dir's top: under its own path its Python
    package would be grpc.reflection, which the grpc module hides."""
    source = os.path.join(GRPC_PROTO, REFLECTION)
    if not os.path.exists(source):
        sys.exit("reflect.py: %s not found (Debian package grpc-proto)" % source)
    shutil.copy(source, os.path.join(out_dir, "reflection.proto"))
    if protoc.main(["protoc", "-I" + out_dir, "--python_out=" + out_dir,
                    "--grpc_python_out=" + out_dir,
                    os.path.join(out_dir, "reflection.proto")]) != 0:
        sys.exit("reflect.py: protoc failed on " + source)
    sys.path.insert(0, out_dir)
    import reflection_pb2  # pylint: disable=import-outside-toplevel,import-error
    import reflection_pb2_grpc  # pylint: disable=import-outside-toplevel,import-error
    return reflection_pb2, reflection_pb2_grpc


class Reflection:
    """The server's services and their descriptors, asked one request at a time."""

    def __init__(self, channel, pb2, pb2_grpc):
        self._stub = pb2_grpc.ServerReflectionStub(channel)
        self._pb2 = pb2
        self.pool = descriptor_pool.DescriptorPool()
        self._added = set()

    def _ask(self, **request):
        responses = self._stub.ServerReflectionInfo(
            iter([self._pb2.ServerReflectionRequest(**request)]), timeout=30)
        response = next(iter(responses))
        if response.HasField("error_response"):
            sys.exit("reflect.py: %s" % response.error_response.error_message)
        return response

    def services(self):
        return [s.name for s in self._ask(list_services="").list_services_response.service]

    def load_symbol(self, symbol):
        """Adds the files that define `symbol` (and their imports) to the pool."""
        response = self._ask(file_containing_symbol=symbol)
        files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                 for raw in response.file_descriptor_response.file_descriptor_proto]
        by_name = {f.name: f for f in files}

        def add(f):
            if f.name in self._added:
                return
            for dependency in f.dependency:
                if dependency not in self._added:
                    add(by_name.get(dependency) or self._file(dependency))
            self.pool.Add(f)
            self._added.add(f.name)

        for f in files:
            add(f)

    def _file(self, name):
        raw = self._ask(file_by_filename=name).file_descriptor_response.file_descriptor_proto[0]
        return descriptor_pb2.FileDescriptorProto.FromString(raw)


def message_class(descriptor):
    try:
        from google.protobuf import message_factory  # pylint: disable=import-outside-toplevel
        if hasattr(message_factory, "GetMessageClass"):
            return message_factory.GetMessageClass(descriptor)
        return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)
    except ImportError:
        sys.exit("reflect.py: no google.protobuf.message_factory")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50053")
    parser.add_argument("--generate_prompt_ids", default="",
                        help="call nanoserve.v1.Decode.Generate with these token ids")
    parser.add_argument("--max_new_tokens", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as stubs, grpc.insecure_channel(args.target) as channel:
        reflection = Reflection(channel, *load_reflection_stubs(stubs))
        services = reflection.services()
        if not args.generate_prompt_ids:
            for name in sorted(services):
                print(name)
                if name.startswith("grpc."):
                    continue  # gRPC's own
                reflection.load_symbol(name)
                for method in reflection.pool.FindServiceByName(name).methods:
                    print("  %s(%s) returns (%s%s)" % (
                        method.name, method.input_type.full_name,
                        "stream " if getattr(method, "server_streaming", False) else "",
                        method.output_type.full_name))
            return
        reflection.load_symbol("nanoserve.v1.Decode")
        method = reflection.pool.FindServiceByName("nanoserve.v1.Decode").methods_by_name["Generate"]
        request_class = message_class(method.input_type)
        response_class = message_class(method.output_type)
        request = request_class(
            prompt_ids=[int(t) for t in args.generate_prompt_ids.split(",")],
            max_new_tokens=args.max_new_tokens, ignore_eos=True)
        call = channel.unary_stream("/nanoserve.v1.Decode/Generate",
                                    request_serializer=request_class.SerializeToString,
                                    response_deserializer=response_class.FromString)
        ids = [m.token.id for m in call(request, timeout=60) if m.HasField("token")]
        print(json.dumps({"services": services, "output_ids": ids}))


if __name__ == "__main__":
    main()
