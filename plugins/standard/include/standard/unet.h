// standard/unet.h — a time-conditioned (optionally class-conditioned) U-Net velocity model for
// images, in the style of DDPM (Ho et al. 2020), small enough for 8x8 to 32x32 images.
//
// Architecture, with x: [B, C, H, W], levels L = |channel_mult|, ch_l = channels * channel_mult[l],
// GN = GroupNorm(groups, ·), conv3 = 3x3 conv (padding 1), conv1 = 1x1 conv:
//   temb = Linear(SiLU(Linear(sinusoidal(t), scale 1000)))  (width E = 4 * channels)
//          [+ Embedding(num_classes + 1, E)(label)]          (label num_classes: the null class)
//   h = conv3(x): C -> channels
//   down, level l = 0 .. L-1:  res_blocks x ResBlock (-> ch_l) [+ Attention each, at l = L-1];
//                              skip_l = h; then, unless l = L-1, h = stride-2 conv3 (ch_l -> ch_l)
//   middle:                    ResBlock, [Attention], ResBlock (ch_{L-1})
//   up, level l = L-1 .. 0:    h = cat(h, skip_l) (2 ch_l channels); res_blocks x ResBlock
//                              (-> ch_l) [+ Attention each, at l = L-1]; then, unless l = 0,
//                              h = conv3(nearest-upsample x2 (h)): ch_l -> ch_{l-1}
//   out = conv3(SiLU(GN(h))): ch_0 -> C, zero-initialised (the network starts at exactly 0)
// ResBlock(in, out)(h, temb) = conv3'(dropout(SiLU(GN(conv3(SiLU(GN(h))) + Linear(SiLU(temb))))))
//   + skip(h), where conv3' is zero-initialised (each block starts as its skip) and skip is a
//   conv1 when in != out, else the identity.
// Attention(h) = h + conv1'(multi-head softmax(q^T k / sqrt(d)) attention over the H*W
//   positions, q, k, v = conv1(GN(h))), where conv1' is zero-initialised.
// Every normalisation is per item, so items of a batch are processed independently.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "flowkit/config.h"
#include "flowkit/linear.h"
#include "flowkit/model.h"
#include "flowkit/registry.h"
#include "flowkit/time_embedding.h"

namespace standard {

// The parameters of `standard.unet` (defaults and ranges: plugin.json) and what the factory
// takes from the domain.
struct UNetOptions {
  std::vector<int64_t> image_shape;  // [C, H, W]: the `image_shape` param, else the domain's item shape
  int64_t channels = 0;
  std::vector<int64_t> channel_mult;  // one entry per level
  int64_t res_blocks = 0;
  int64_t groups = 0;
  bool attention = false;
  int64_t heads = 0;
  double dropout = 0.0;
  int64_t time_embedding_dim = 0;
  bool class_conditional = false;
  int64_t num_classes = 0;  // from the domain: labels 0..num_classes-1; index num_classes is the null class

  int64_t levels() const { return static_cast<int64_t>(channel_mult.size()); }
  int64_t level_channels(int64_t level) const { return channels * channel_mult.at(level); }
  int64_t time_width() const { return 4 * channels; }
};
// Reads every key of a resolved config and checks what the config alone decides (channel_mult
// positive integers, channels a multiple of groups, heads dividing the lowest level, the form of
// image_shape). image_shape stays empty when not given; num_classes stays 0.
UNetOptions unet_options(const flowkit::Config& cfg);

// ResBlock(in, out) of the header comment: h: [B, in, H, W], temb: [B, E] -> [B, out, H, W].
class ResBlockImpl : public torch::nn::Module {
 public:
  ResBlockImpl(int64_t in, int64_t out, int64_t time_width, int64_t groups, double dropout);
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& temb);

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, skip_{nullptr};  // skip_ empty when in == out
  flowkit::Linear time_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
};
TORCH_MODULE(ResBlock);

// Multi-head self-attention over the H*W positions, residual: [B, ch, H, W] -> same.
class AttentionBlockImpl : public torch::nn::Module {
 public:
  AttentionBlockImpl(int64_t channels, int64_t heads, int64_t groups);
  torch::Tensor forward(const torch::Tensor& h);

 private:
  int64_t heads_;
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Conv2d qkv_{nullptr}, proj_{nullptr};
};
TORCH_MODULE(AttentionBlock);

// The residual blocks of one level of one path, each followed by attention when asked.
class UNetStageImpl : public torch::nn::Module {
 public:
  UNetStageImpl(int64_t in, int64_t out, const UNetOptions& options, bool attention);
  torch::Tensor forward(torch::Tensor h, const torch::Tensor& temb);

 private:
  std::vector<ResBlock> blocks_;
  std::vector<AttentionBlock> attention_;  // empty, or one per block
};
TORCH_MODULE(UNetStage);

class UNetNetImpl : public torch::nn::Module {
 public:
  explicit UNetNetImpl(const UNetOptions& options);
  // x: [B, C, H, W]; t: [B]; label: [B] int64 or undefined (-> null class).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& label);
  const UNetOptions& options() const { return options_; }

 private:
  UNetOptions options_;
  flowkit::Linear time1_{nullptr}, time2_{nullptr};
  torch::nn::Embedding label_embedding_{nullptr};
  torch::nn::Conv2d input_{nullptr}, output_{nullptr};
  torch::nn::GroupNorm output_norm_{nullptr};
  std::vector<UNetStage> down_, up_;                   // indexed by level (up_[0]: full resolution)
  std::vector<torch::nn::Conv2d> downsample_, upsample_;  // [l]: level l -> l+1, level l+1 -> l
  ResBlock middle1_{nullptr}, middle2_{nullptr};
  AttentionBlock middle_attention_{nullptr};
  flowkit::SinusoidalTimeEmbedding time_embedding_;  // not a buffer: checkpoints stay as they are
};
TORCH_MODULE(UNetNet);

class UNetModel : public flowkit::Model {
 public:
  UNetModel(const UNetOptions& options, const std::string& device);
  // x: [B, ...] holding C*H*W values per item (read as [B, C, H, W], returned in x's shape);
  // t: [B] or 0-dim; uses cond "label" when class_conditional.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const flowkit::Conditioning& cond) override;
  torch::nn::Module& module() override { return *net_; }
  UNetNet& net() { return net_; }

 private:
  UNetNet net_;
};

// Factory of `standard.unet`: params channels, channel_mult, res_blocks, groups, attention,
// heads, dropout, time_embedding_dim, class_conditional, image_shape. Needs ctx.domain (item
// shape, number of classes); checks the image against the levels (H, W divisible by 2^(L-1)).
std::unique_ptr<flowkit::Component> make_unet(const flowkit::Config& cfg, const flowkit::BuildContext& ctx);

}  // namespace standard
