// Internal helpers shared by the shim's translation units; not part of the C
// interface.
#ifndef PIPEMESH_SHIM_INTERNAL_HPP
#define PIPEMESH_SHIM_INTERNAL_HPP

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>

#include <chrono>
#include <limits>
#include <memory>
#include <string>

#include "pipemesh_grpc.h"

namespace pipemesh {

constexpr int64_t kDefaultMaxMessageBytes = 256LL * 1024 * 1024;

// Hands a received message to the C side without copying when gRPC holds it
// in one slice (the common case), and with one copy otherwise.
pm_received_bytes TakeReceivedBytes(grpc::ByteBuffer &buffer);

// Wraps outgoing bytes in a ByteBuffer, without copying when the caller gave
// a release function.
grpc::ByteBuffer MakeByteBuffer(const pm_outgoing_bytes &bytes);

// Releases outgoing bytes that will not be sent.
void DropOutgoingBytes(const pm_outgoing_bytes &bytes);

void SetError(pm_error *error, int code, const std::string &message);

int64_t EffectiveMaxMessageBytes(const pm_transport_config *transport);

// Milliseconds from now until a deadline, clamped to [0, INT64_MAX].
int64_t MillisecondsUntil(std::chrono::system_clock::time_point deadline);

std::chrono::system_clock::time_point DeadlineAfter(int64_t milliseconds);

// A C string as std::string, "" for NULL.
inline std::string OrEmpty(const char *text) { return text ? text : ""; }

// A 64-bit size as the int grpc's settings take, saturating.
inline int ClampToInt(int64_t value) {
  return value > std::numeric_limits<int>::max() ? std::numeric_limits<int>::max()
                                                 : static_cast<int>(value);
}

}  // namespace pipemesh

#endif
