// The server's internals, shared by the server and its reflection service.
#ifndef PIPEMESH_SHIM_SERVER_INTERNAL_HPP
#define PIPEMESH_SHIM_SERVER_INTERNAL_HPP

#include <grpcpp/generic/async_generic_service.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "shim_internal.hpp"

namespace pipemesh {

class ReflectionIndex;

// Answers grpc.reflection.v1 and v1alpha ServerReflectionInfo calls from the
// descriptor set the server was given, listing `services` (those the server
// serves) and the reflection services themselves.
grpc::ServerGenericBidiReactor *MakeReflectionReactor(
    std::shared_ptr<const ReflectionIndex> index,
    std::shared_ptr<const std::vector<std::string>> services);

// Builds the lookup tables from a serialized FileDescriptorSet; NULL when the
// bytes do not parse (the error says why).
std::shared_ptr<const ReflectionIndex> BuildReflectionIndex(
    const uint8_t *bytes, size_t length, std::string *error);

bool IsReflectionMethod(const std::string &method);

}  // namespace pipemesh

#endif
