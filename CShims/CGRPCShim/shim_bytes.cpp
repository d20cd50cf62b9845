// Byte buffers, errors and time: the small pieces every call uses.
#include <cstring>
#include <limits>

#include "shim_internal.hpp"

namespace pipemesh {

pm_received_bytes TakeReceivedBytes(grpc::ByteBuffer &buffer) {
  pm_received_bytes bytes{nullptr, 0, nullptr};
  if (!buffer.Valid()) return bytes;
  grpc::Slice slice;
  if (!buffer.TrySingleSlice(&slice).ok() &&
      !buffer.DumpToSingleSlice(&slice).ok()) {
    return bytes;
  }
  auto *owner = new grpc::Slice(std::move(slice));
  bytes.data = owner->begin();
  bytes.length = owner->size();
  bytes.owner = owner;
  buffer.Clear();
  return bytes;
}

grpc::ByteBuffer MakeByteBuffer(const pm_outgoing_bytes &bytes) {
  if (bytes.length == 0) {
    DropOutgoingBytes(bytes);
    grpc::Slice empty;
    return grpc::ByteBuffer(&empty, 1);
  }
  if (bytes.release == nullptr) {
    grpc::Slice copy(bytes.data, bytes.length);
    return grpc::ByteBuffer(&copy, 1);
  }
  grpc::Slice borrowed(const_cast<uint8_t *>(bytes.data), bytes.length,
                       bytes.release, bytes.release_context);
  return grpc::ByteBuffer(&borrowed, 1);
}

void DropOutgoingBytes(const pm_outgoing_bytes &bytes) {
  if (bytes.release != nullptr) bytes.release(bytes.release_context);
}

void SetError(pm_error *error, int code, const std::string &message) {
  if (error == nullptr) return;
  error->code = code;
  std::strncpy(error->message, message.c_str(), sizeof(error->message) - 1);
  error->message[sizeof(error->message) - 1] = '\0';
}

int64_t EffectiveMaxMessageBytes(const pm_transport_config *transport) {
  if (transport == nullptr || transport->max_message_bytes <= 0) {
    return kDefaultMaxMessageBytes;
  }
  return transport->max_message_bytes;
}

int64_t MillisecondsUntil(std::chrono::system_clock::time_point deadline) {
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return std::numeric_limits<int64_t>::max();
  }
  auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::system_clock::now());
  return remaining.count() < 0 ? 0 : remaining.count();
}

std::chrono::system_clock::time_point DeadlineAfter(int64_t milliseconds) {
  return std::chrono::system_clock::now() +
         std::chrono::milliseconds(milliseconds);
}

}  // namespace pipemesh

extern "C" void pm_received_bytes_release(void *owner) {
  delete static_cast<grpc::Slice *>(owner);
}
