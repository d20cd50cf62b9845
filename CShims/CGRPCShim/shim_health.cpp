// grpc.health.v1.Health answered by the server's own completion-queue
// threads (grpc++'s default health service is a callback service, whose
// extra polling threads would sit between the socket and every other call).
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/wire_format_lite.h>

#include <optional>

#include "shim_server_internal.hpp"

namespace pipemesh {

namespace {

using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;
using google::protobuf::io::StringOutputStream;
using google::protobuf::internal::WireFormatLite;

// grpc.health.v1.HealthCheckResponse.ServingStatus
constexpr int kServiceUnknown = 3;

const char kCheckMethod[] = "/grpc.health.v1.Health/Check";
const char kWatchMethod[] = "/grpc.health.v1.Health/Watch";

// The `service` of a HealthCheckRequest; nothing when the bytes do not parse.
std::optional<std::string> ParseService(grpc::ByteBuffer &buffer) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (!buffer.Dump(&slices).ok()) return std::nullopt;
  for (const auto &slice : slices) {
    bytes.append(reinterpret_cast<const char *>(slice.begin()), slice.size());
  }
  CodedInputStream input(reinterpret_cast<const uint8_t *>(bytes.data()),
                         static_cast<int>(bytes.size()));
  std::string service;
  while (uint32_t tag = input.ReadTag()) {
    if (tag == WireFormatLite::MakeTag(1, WireFormatLite::WIRETYPE_LENGTH_DELIMITED)) {
      if (!WireFormatLite::ReadString(&input, &service)) return std::nullopt;
    } else if (!WireFormatLite::SkipField(&input, tag)) {
      return std::nullopt;
    }
  }
  if (!input.ConsumedEntireMessage()) return std::nullopt;
  return service;
}

grpc::ByteBuffer EncodeResponse(int status) {
  std::string bytes;
  {
    StringOutputStream stream(&bytes);
    CodedOutputStream output(&stream);
    WireFormatLite::WriteEnum(1, status, &output);
  }
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

}  // namespace

// Reads a call's HealthCheckRequest and hands its service to `OnService`;
// a malformed request ends the call with INVALID_ARGUMENT.
class HealthCall : public StreamHandler {
 public:
  explicit HealthCall(std::shared_ptr<HealthRegistry> registry)
      : registry_(std::move(registry)) {}

  void OnStart(ServerStream &stream) override {
    stream_ = &stream;
    stream_->Read(&request_);
  }

  void OnRead(bool ok) override {
    if (!ok) return;  // the client is gone
    auto service = ParseService(request_);
    if (!service) {
      stream_->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "malformed grpc.health.v1.HealthCheckRequest"));
      return;
    }
    OnService(*service);
  }

 protected:
  virtual void OnService(const std::string &service) = 0;

  std::shared_ptr<HealthRegistry> registry_;
  ServerStream *stream_ = nullptr;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
};

// Answers one Check with the service's status, or NOT_FOUND.
class CheckHandler final : public HealthCall {
 public:
  using HealthCall::HealthCall;

 private:
  void OnService(const std::string &service) override {
    int status = registry_->Status(service);
    if (status == kServiceUnknown) {
      stream_->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                   "no service named \"" + service + "\" on this server"));
      return;
    }
    response_ = EncodeResponse(status);
    stream_->WriteAndFinish(&response_);
  }
};

// Streams a service's status and every change after it; only the latest
// status waits while a write is in flight. Ends with UNAVAILABLE when the
// server shuts down.
class HealthWatch final : public HealthCall {
 public:
  using HealthCall::HealthCall;

  void OnWrite(bool ok) override {
    std::lock_guard<std::mutex> lock(mutex_);
    writing_ = false;
    if (ok) WriteNextLocked();
  }

  void OnDone(bool) override {
    registry_->RemoveWatch(this);
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
  }

  const std::string &service() const { return service_; }

  // Called with the registry's lock held.
  void Notify(int status, bool last) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (done_) return;
    pending_ = status;
    ending_ = ending_ || last;
    WriteNextLocked();
  }

 private:
  void OnService(const std::string &service) override {
    service_ = service;
    registry_->AddWatch(this);  // calls Notify with the current status
  }

  void WriteNextLocked() {
    if (writing_ || finished_) return;
    if (pending_) {
      response_ = EncodeResponse(*std::exchange(pending_, std::nullopt));
      writing_ = stream_->Write(&response_);
    } else if (ending_) {
      finished_ = true;
      stream_->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down"));
    }
  }

  std::string service_;
  std::mutex mutex_;
  std::optional<int> pending_;
  bool writing_ = false;
  bool ending_ = false;
  bool finished_ = false;
  bool done_ = false;
};

HealthRegistry::HealthRegistry() { statuses_[""] = kServing; }

void HealthRegistry::Set(const std::string &service, bool serving) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (shut_down_) return;
  int status = serving ? kServing : kNotServing;
  statuses_[service] = status;
  for (auto *watch : watches_) {
    if (watch->service() == service) watch->Notify(status, false);
  }
}

void HealthRegistry::Shutdown() {
  std::lock_guard<std::mutex> lock(mutex_);
  shut_down_ = true;
  for (auto &entry : statuses_) entry.second = kNotServing;
  for (auto *watch : watches_) {
    watch->Notify(statuses_.count(watch->service()) ? kNotServing : kServiceUnknown, true);
  }
}

int HealthRegistry::Status(const std::string &service) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = statuses_.find(service);
  return found == statuses_.end() ? kServiceUnknown : found->second;
}

void HealthRegistry::AddWatch(HealthWatch *watch) {
  std::lock_guard<std::mutex> lock(mutex_);
  watches_.insert(watch);
  auto found = statuses_.find(watch->service());
  watch->Notify(found == statuses_.end() ? kServiceUnknown : found->second, shut_down_);
}

void HealthRegistry::RemoveWatch(HealthWatch *watch) {
  std::lock_guard<std::mutex> lock(mutex_);
  watches_.erase(watch);
}

std::unique_ptr<StreamHandler> HealthRegistry::HandlerFor(const std::string &method) {
  if (method == kCheckMethod) return std::make_unique<CheckHandler>(shared_from_this());
  if (method == kWatchMethod) return std::make_unique<HealthWatch>(shared_from_this());
  return nullptr;
}

}  // namespace pipemesh
