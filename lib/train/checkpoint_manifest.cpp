// Checkpoint manifest JSON (info and pieces), resolving --resume-from, and the
// file-system helpers (fsync, atomic small-file write).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "pp3d/core/error.h"
#include "pp3d/core/user_error.h"
#include "train/checkpoint_internal.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace pp3d::detail {

namespace {

json object_or_empty(const std::string& text, const char* what) {
  if (text.empty()) return json::object();
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    PP3D_FAIL("checkpoint {} is not valid JSON ({}): '{}'", what, e.what(), text.substr(0, 200));
  }
  PP3D_CHECK(j.is_object(), "checkpoint {} must be a JSON object, got '{}'", what, text.substr(0, 200));
  return j;
}

}  // namespace

json info_to_json(const CheckpointInfo& info) {
  const GptConfig& m = info.model;
  json j;
  j["step"] = info.step;
  j["world_size"] = info.world_size;
  j["rng"] = {{"seed", info.seed}, {"next_step", info.step}};
  j["optimizer"] = {{"type", "adamw"}, {"step", info.optimizer_step}};
  j["model"] = {{"vocab_size", m.vocab_size},   {"padded_vocab_size", m.padded_vocab()},
                {"max_seq_len", m.max_seq_len}, {"num_layers", m.num_layers},
                {"num_heads", m.num_heads},     {"hidden_size", m.hidden_size},
                {"mlp_hidden_size", m.mlp_hidden()}, {"ln_eps", m.ln_eps},
                {"init_std", m.init_std},       {"wpe_init_std", m.wpe_init_std},
                {"tied_embeddings", m.tied_embeddings}};
  if (m.is_llama()) {  // absent for GPT-2, so older readers and GPT manifests are unchanged
    j["model"]["arch"] = "llama";
    j["model"]["num_kv_heads"] = m.kv_heads();
    j["model"]["rope_theta"] = m.rope_theta;
  }
  const CheckpointLayout& l = info.layout;
  j["layout"] = {{"tp", l.tp}, {"pp", l.pp}, {"dp", l.dp}, {"zero_stage", l.zero_stage},
                 {"virtual_stages", l.virtual_stages}, {"split", l.split}};
  if (info.loss_scaler) {
    const auto& s = *info.loss_scaler;
    j["loss_scaler"] = {{"scale", s.scale}, {"iter", s.iter}, {"last_overflow", s.last_overflow},
                        {"remaining_hysteresis", s.remaining_hysteresis}};
  } else {
    j["loss_scaler"] = nullptr;
  }
  j["trainer_config"] = object_or_empty(info.trainer_config_json, "trainer_config_json");
  j["data_state"] = object_or_empty(info.data_state_json, "data_state_json");
  return j;
}

CheckpointInfo info_from_json(const json& j, const std::string& where) {
  CheckpointInfo info;
  try {
    info.step = j.at("step").get<int64_t>();
    info.world_size = j.at("world_size").get<int>();
    info.seed = j.at("rng").at("seed").get<uint64_t>();
    info.optimizer_step = j.at("optimizer").at("step").get<int64_t>();
    const json& m = j.at("model");
    GptConfig& c = info.model;
    c.vocab_size = m.at("vocab_size").get<int64_t>();
    c.padded_vocab_size = m.at("padded_vocab_size").get<int64_t>();
    c.max_seq_len = m.at("max_seq_len").get<int64_t>();
    c.num_layers = m.at("num_layers").get<int64_t>();
    c.num_heads = m.at("num_heads").get<int64_t>();
    c.hidden_size = m.at("hidden_size").get<int64_t>();
    c.mlp_hidden_size = m.at("mlp_hidden_size").get<int64_t>();
    c.ln_eps = m.at("ln_eps").get<float>();
    c.init_std = m.at("init_std").get<float>();
    c.wpe_init_std = m.at("wpe_init_std").get<float>();
    c.tied_embeddings = m.at("tied_embeddings").get<bool>();
    const std::string arch = m.value("arch", std::string("gpt2"));
    PP3D_CHECK(arch == "gpt2" || arch == "llama", "checkpoint manifest '{}': unknown model arch '{}' (gpt2 | llama)",
               where, arch);
    if (arch == "llama") {
      c.arch = ModelArch::Llama;
      c.num_kv_heads = m.at("num_kv_heads").get<int64_t>();
      c.rope_theta = m.at("rope_theta").get<float>();
    }
    const json& l = j.at("layout");
    info.layout.tp = l.at("tp").get<int>();
    info.layout.pp = l.at("pp").get<int>();
    info.layout.dp = l.at("dp").get<int>();
    info.layout.zero_stage = l.at("zero_stage").get<int>();
    info.layout.virtual_stages = l.at("virtual_stages").get<int>();
    info.layout.split = l.at("split").get<std::string>();
    if (j.contains("loss_scaler") && !j.at("loss_scaler").is_null()) {
      const json& s = j.at("loss_scaler");
      DynamicLossScaler::State st;
      st.scale = s.at("scale").get<float>();
      st.iter = s.at("iter").get<int64_t>();
      st.last_overflow = s.at("last_overflow").get<int64_t>();
      st.remaining_hysteresis = s.at("remaining_hysteresis").get<int>();
      info.loss_scaler = st;
    }
    info.trainer_config_json = j.value("trainer_config", json::object()).dump();
    info.data_state_json = j.value("data_state", json::object()).dump();
  } catch (const json::exception& e) {
    PP3D_FAIL("checkpoint manifest '{}' is malformed: {}", where, e.what());
  }
  return info;
}

json piece_to_json(const Piece& p) {
  json slice = json::array();
  for (std::size_t d = 0; d < p.slab.begin.size(); ++d) slice.push_back({p.slab.begin[d], p.slab.end[d]});
  return {{"file", p.file}, {"slice", slice}, {"flat", {p.flat_begin, p.flat_end}},
          {"offset", p.offset}, {"bytes", p.bytes}, {"crc32", p.crc}};
}

Piece piece_from_json(const json& j, const std::string& where) {
  Piece p;
  try {
    p.file = j.at("file").get<std::string>();
    for (const json& d : j.at("slice")) {
      p.slab.begin.push_back(d.at(0).get<int64_t>());
      p.slab.end.push_back(d.at(1).get<int64_t>());
    }
    p.flat_begin = j.at("flat").at(0).get<int64_t>();
    p.flat_end = j.at("flat").at(1).get<int64_t>();
    p.offset = j.at("offset").get<uint64_t>();
    p.bytes = j.at("bytes").get<uint64_t>();
    p.crc = j.at("crc32").get<uint32_t>();
  } catch (const json::exception& e) {
    PP3D_FAIL("checkpoint manifest: malformed piece of {}: {}", where, e.what());
  }
  PP3D_CHECK(p.file.find('/') == std::string::npos && !p.file.empty() && p.file != "..",
             "checkpoint manifest: piece of {} names an invalid file '{}'", where, p.file);
  PP3D_CHECK(p.flat_begin >= 0 && p.flat_begin <= p.flat_end && p.flat_end <= p.slab.numel() &&
                 p.bytes == static_cast<uint64_t>(p.numel()) * 4u,
             "checkpoint manifest: inconsistent piece of {} (slice {}, flat [{}, {}), {} bytes)", where, p.slab.str(),
             p.flat_begin, p.flat_end, p.bytes);
  return p;
}

std::string dtype_of_manifest() { return "f32"; }

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  PP3D_CHECK(fd >= 0, "cannot open '{}' to fsync it: {}", path, std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  PP3D_CHECK(rc == 0, "fsync of '{}' failed: {}", path, std::strerror(err));
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    PP3D_CHECK(out.good(), "cannot create '{}': {}", tmp, std::strerror(errno));
    out << contents;
    out.flush();
    PP3D_CHECK(out.good(), "write to '{}' failed: {}", tmp, std::strerror(errno));
  }
  fsync_path(tmp, false);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  PP3D_CHECK(!ec, "cannot rename '{}' to '{}': {}", tmp, path, ec.message());
  fsync_path(fs::path(path).parent_path().empty() ? "." : fs::path(path).parent_path().string(), true);
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  PP3D_CHECK(in.good(), "cannot open '{}': {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace pp3d::detail

namespace pp3d {

std::string checkpoint_dir_name(const std::string& output_dir, int64_t step) {
  return (fs::path(output_dir) / fmt::format("checkpoint-{}", step)).string();
}

std::string resolve_checkpoint(const std::string& spec, const std::string& output_dir) {
  auto follow = [](const fs::path& dir) -> std::string {
    std::string name = detail::read_text_file((dir / "latest").string());
    while (!name.empty() && (name.back() == '\n' || name.back() == '\r' || name.back() == ' ')) name.pop_back();
    PP3D_CHECK(!name.empty(), "'{}' is empty", (dir / "latest").string());
    return (dir / name).string();
  };
  if (spec == "latest") {
    PP3D_CHECK(!output_dir.empty(), "--resume-from latest needs the output directory");
    PP3D_CHECK(fs::exists(fs::path(output_dir) / "latest"),
               "--resume-from latest: no '{}/latest' pointer (no checkpoint saved there yet)", output_dir);
    return follow(output_dir);
  }
  PP3D_REQUIRE(fs::is_directory(spec), "checkpoint directory '{}' does not exist", spec);
  if (fs::exists(fs::path(spec) / "manifest.json")) return spec;
  if (fs::exists(fs::path(spec) / "latest")) return follow(spec);
  PP3D_FAIL("'{}' holds neither manifest.json (a checkpoint) nor a 'latest' pointer (an output directory); an "
            "interrupted save leaves only checkpoint-<step>.tmp-* directories, which are not loadable",
            spec);
}

CheckpointInfo read_checkpoint_info(const std::string& dir) {
  return detail::info_from_json(detail::read_manifest(dir), (fs::path(dir) / "manifest.json").string());
}

json detail::read_manifest(const std::string& dir) {
  PP3D_REQUIRE(fs::is_directory(dir), "checkpoint directory '{}' does not exist", dir);
  const std::string mpath = (fs::path(dir) / "manifest.json").string();
  PP3D_CHECK(fs::exists(mpath), "checkpoint '{}' has no manifest.json (incomplete save or not a pp3d checkpoint)", dir);
  json j;
  try {
    j = json::parse(detail::read_text_file(mpath));
  } catch (const json::exception& e) {
    PP3D_FAIL("checkpoint manifest '{}' is not valid JSON: {}", mpath, e.what());
  }
  PP3D_CHECK(j.value("format", std::string()) == detail::kCheckpointFormatName,
             "'{}' is not a pp3d checkpoint manifest (format '{}')", mpath, j.value("format", std::string()));
  PP3D_CHECK(j.value("version", 0) == detail::kCheckpointFormatVersion,
             "checkpoint '{}' has format version {}; this build reads version {}", mpath, j.value("version", 0),
             detail::kCheckpointFormatVersion);
  PP3D_CHECK(j.contains("tensors") && j["tensors"].is_object(), "checkpoint manifest '{}' lists no tensors", mpath);
  return j;
}

}  // namespace pp3d
