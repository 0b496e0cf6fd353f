// Checkpoints: checkpoint_dir/step-N/{model,optimizer}.safetensors and
// state.json, written by rank 0 into a temporary directory that is renamed
// into place when complete; `latest` (a one-line file naming the directory)
// is replaced last, so a crash at any moment leaves the previous checkpoint
// whole and `latest` pointing at it. Files hold logical experts under their
// HF names, so any grid resumes any checkpoint.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/check.hpp"
#include "core/file_io.hpp"
#include "model/load_weights.hpp"
#include "model/safetensors.hpp"
#include "train/trainer.hpp"

namespace epx::train {

namespace fs = std::filesystem;

namespace {

// A rank's share of a checkpoint travels as two messages: the names and
// shapes (JSON), then the values and both moments.
constexpr int kTagShareNames = 7201;
constexpr int kTagShareData = 7202;
constexpr const char* kFormat = "epx-train checkpoint 1";

void write_file_atomic(const fs::path& path, const std::string& text) {
  core::write_file_atomically(path.string(), {{text.data(), text.size()}}, "checkpoint");
}

}  // namespace

namespace {

// One rank's share of a checkpoint: named tensors with their values and
// both moments, as one float array of three equal parts.
struct Share {
  nlohmann::json names = nlohmann::json::array();  // [[name, [shape...]], ...]
  std::vector<float> values, avg, avg_sq;
  void add(const std::string& name, const model::ParamInfo& p, const model::ParamStore& X) {
    names.push_back({name, p.shape});
    const auto b = X.values.begin() + p.offset;
    values.insert(values.end(), b, b + p.numel);
    avg.insert(avg.end(), X.exp_avg.begin() + p.offset, X.exp_avg.begin() + p.offset + p.numel);
    avg_sq.insert(avg_sq.end(), X.exp_avg_sq.begin() + p.offset,
                  X.exp_avg_sq.begin() + p.offset + p.numel);
  }
};

}  // namespace

std::string Trainer::save_checkpoint() {
  const int ep = config_.parallel.ep;
  // Every parameter once: dense ones from dp rank 0 of each stage, experts
  // from the stage's first EP group (each rank sends each logical expert it
  // holds once; rank 0 keeps the first copy in rank order, the replicas
  // being identical), DualPipe's stages from their first copy; all to rank 0.
  Share mine;
  for (std::size_t c = 0; c < models_.size(); ++c) {
    if (schedule_ && !first_copy_of_stage(static_cast<int>(c))) continue;
    const model::Model& m = *models_[c];
    if (dp_rank_ == 0)
      for (const model::ParamInfo& p : m.dense.params()) mine.add(p.name, p, m.dense);
    if (dp_rank_ < ep) {
      const std::vector<std::string> names = m.expert_names();
      std::set<std::string> seen;
      for (std::size_t i = 0; i < names.size(); ++i)
        if (seen.insert(names[i]).second)
          mine.add(names[i], m.experts.info(static_cast<int>(i)), m.experts);
    }
  }
  std::vector<Share> shares(static_cast<std::size_t>(world_size_));
  {
    const std::string text = mine.names.dump();
    std::vector<std::int64_t> size{static_cast<std::int64_t>(text.size()),
                                   static_cast<std::int64_t>(mine.values.size())};
    const std::vector<std::int64_t> sizes = allgather(world_comm_, size, "checkpoint: share sizes");
    std::vector<std::string> texts(static_cast<std::size_t>(world_size_));
    std::vector<std::vector<float>> data(static_cast<std::size_t>(world_size_));
    std::vector<float> out = mine.values;
    out.insert(out.end(), mine.avg.begin(), mine.avg.end());
    out.insert(out.end(), mine.avg_sq.begin(), mine.avg_sq.end());
    std::vector<MPI_Request> req;
    std::vector<int> peers;
    // An MPI count is an int: a share goes in pieces of at most 2^28 floats
    // (1 GiB), in order (MPI does not reorder messages of one tag between
    // two ranks). Both ends cut the same length the same way.
    constexpr std::int64_t kPiece = std::int64_t{1} << 28;
    const auto post_data = [&](float* p, std::int64_t n, int peer, bool receive) {
      for (std::int64_t at = 0; at == 0 || at < n; at += kPiece) {
        const int len = static_cast<int>(std::min(kPiece, n - at));
        req.emplace_back();
        if (receive)
          MPI_Irecv(p + at, len, MPI_FLOAT, peer, kTagShareData, world_comm_.get(), &req.back());
        else
          MPI_Isend(p + at, len, MPI_FLOAT, peer, kTagShareData, world_comm_.get(), &req.back());
        peers.push_back(peer);
      }
    };
    if (rank_ == 0) {
      for (int q = 1; q < world_size_; ++q) {
        texts[q].resize(static_cast<std::size_t>(sizes[2 * q]));
        data[q].resize(static_cast<std::size_t>(3 * sizes[2 * q + 1]));
        req.emplace_back();
        MPI_Irecv(texts[q].data(), static_cast<int>(texts[q].size()), MPI_CHAR, q, kTagShareNames,
                  world_comm_.get(), &req.back());
        peers.push_back(q);
        post_data(data[q].data(), static_cast<std::int64_t>(data[q].size()), q, true);
      }
    } else {
      req.emplace_back();
      MPI_Isend(text.data(), static_cast<int>(text.size()), MPI_CHAR, 0, kTagShareNames,
                world_comm_.get(), &req.back());
      peers.push_back(0);
      post_data(out.data(), static_cast<std::int64_t>(out.size()), 0, false);
    }
    wait_all(world_comm_, req, peers, "checkpoint: collecting the parameters");
    if (rank_ == 0) {
      shares[0] = std::move(mine);
      for (int q = 1; q < world_size_; ++q) {
        Share& sh = shares[q];
        sh.names = nlohmann::json::parse(texts[q]);
        const auto n = static_cast<std::ptrdiff_t>(sizes[2 * q + 1]);
        sh.values.assign(data[q].begin(), data[q].begin() + n);
        sh.avg.assign(data[q].begin() + n, data[q].begin() + 2 * n);
        sh.avg_sq.assign(data[q].begin() + 2 * n, data[q].end());
      }
    }
  }

  const fs::path root = config_.train.checkpoint_dir;
  const std::string name = "step-" + std::to_string(step_);
  std::string error;
  if (rank_ == 0) {
    try {
      std::vector<std::pair<std::string, Tensor>> weights, moments;
      std::set<std::string> seen;
      for (Share& sh : shares) {
        std::int64_t off = 0;
        for (const auto& entry : sh.names) {
          const std::string name = entry[0].get<std::string>();
          const std::vector<std::int64_t> shape = entry[1].get<std::vector<std::int64_t>>();
          std::int64_t numel = 1;
          for (const std::int64_t d : shape) numel *= d;
          if (seen.insert(name).second) {
            weights.emplace_back(name, Tensor::wrap(sh.values.data() + off, shape, DType::f32));
            moments.emplace_back(name + ".exp_avg",
                                 Tensor::wrap(sh.avg.data() + off, shape, DType::f32));
            moments.emplace_back(name + ".exp_avg_sq",
                                 Tensor::wrap(sh.avg_sq.data() + off, shape, DType::f32));
          }
          off += numel;
        }
      }
      for (int l = 0; l < model_->num_moe_layers(); ++l)
        weights.emplace_back(
            model_->bias_name(l),
            Tensor::wrap(model_->bias[l].data(), {config_.model.num_experts}, DType::f32));
      fs::create_directories(root);
      const fs::path tmp = root / (".tmp-" + name);
      fs::remove_all(tmp);
      fs::create_directories(tmp);
      const std::map<std::string, std::string> meta{{"format", "pt"}, {"epx", kFormat},
                                                    {"step", std::to_string(step_)}};
      model::save_safetensors((tmp / "model.safetensors").string(), weights, meta);
      model::save_safetensors((tmp / "optimizer.safetensors").string(), moments, meta);
      nlohmann::json state;
      state["format"] = kFormat;
      state["step"] = step_;
      state["data"] = {{"next_step", step_},
                       {"sequences_consumed", step_ * global_batch_},
                       {"global_batch", global_batch_}};
      state["grid"] = {{"pp", config_.parallel.pp}, {"dp", config_.parallel.dp}, {"ep", ep}};
      state["config"] = to_yaml(config_);
      write_file_atomic(tmp / "state.json", state.dump(2) + "\n");
      core::sync_directory(tmp.string());
      const fs::path final_dir = root / name;
      const fs::path old = root / (".old-" + name);
      if (fs::exists(final_dir)) {
        fs::remove_all(old);
        fs::rename(final_dir, old);
      }
      fs::rename(tmp, final_dir);
      core::sync_directory(root.string());
      write_file_atomic(root / "latest", name + "\n");
      fs::remove_all(old);
    } catch (const std::exception& e) {
      error = std::string("checkpoint: writing ") + (root / name).string() + ": " + e.what();
    }
  }
  agree(world_comm_, error, "epx-train: writing the checkpoint");
  return (root / name).string();
}

void Trainer::load_weights(const std::string& path, bool with_optimizer) {
  const model::SafetensorsReader w(path);
  std::unique_ptr<model::SafetensorsReader> o;
  if (with_optimizer)
    o = std::make_unique<model::SafetensorsReader>(
        (fs::path(path).parent_path() / "optimizer.safetensors").string());
  for (auto& m : models_) {
    // A checkpoint (with_optimizer) always has the bias buffers.
    model::load_weights(*m, w, /*require_bias=*/with_optimizer);
    if (!o) continue;
    model::ParamStore& D = m->dense;
    model::ParamStore& X = m->experts;
    for (const model::ParamInfo& p : D.params()) {
      model::load_param(*o, p.name + ".exp_avg", p, D.exp_avg);
      model::load_param(*o, p.name + ".exp_avg_sq", p, D.exp_avg_sq);
    }
    const std::vector<std::string> names = m->expert_names();
    for (std::size_t i = 0; i < names.size(); ++i) {
      model::load_param(*o, names[i] + ".exp_avg", X.info(static_cast<int>(i)), X.exp_avg);
      model::load_param(*o, names[i] + ".exp_avg_sq", X.info(static_cast<int>(i)), X.exp_avg_sq);
    }
  }
}

void Trainer::load_checkpoint(const std::string& dir) {
  const fs::path d = dir;
  std::ifstream in(d / "state.json");
  EPX_CHECK(in.good(), InvalidArgument, "resume: ", (d / "state.json").string(), " cannot be read");
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    EPX_THROW(InvalidArgument, "resume: ", (d / "state.json").string(), " is not valid JSON (",
              e.what(), ")");
  }
  EPX_CHECK(state.value("format", "") == kFormat, InvalidArgument, "resume: ",
            (d / "state.json").string(), " is not an epx-train checkpoint");
  load_weights((d / "model.safetensors").string(), true);
  step_ = state.at("step").get<std::int64_t>();
}

}  // namespace epx::train
