// The user-data domains against independent implementations: numpy writes the .npy files
// (every dtype, Fortran order) and Pillow the JPEGs; the split, the normalisation and its
// undoing, the paired conditions, the image store and resizing against closed forms; every
// bad file named in its error; and, end to end, a run reopened after its data file changed
// samples with the normalisation it was trained with.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "flowkit/core/plugin_host.h"
#include "flowkit/core/embed.h"
#include "flowkit/core/session.h"
#include "flowkit/error.h"
#include "flowkit/io.h"
#include "standard/held_out.h"
#include "standard/image_folder.h"
#include "standard/tensor_domain.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace standard;

namespace {

const char* kPython = "/usr/bin/python3";

bool numpy_and_pillow() {
  std::string out;
  return run_command(std::string(kPython) + " -c 'import numpy, PIL' 2>&1", &out) == 0;
}

void python(const fs::path& dir, const std::string& script) {
  const fs::path file = dir / "script.py";
  std::ofstream(file) << script;
  std::string out;
  ASSERT_EQ(run_command(std::string(kPython) + " " + file.string() + " 2>&1", &out), 0) << out;
}

void write_text(const fs::path& file, const std::string& text) { std::ofstream(file) << text; }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TensorDomainOptions tensor_options(const fs::path& file) {
  TensorDomainOptions o;
  o.file = file.string();
  o.test_fraction = 0.25;
  o.normalize = "standard";
  o.projections = 16;
  o.device = "cpu";
  return o;
}

torch::Tensor to_tensor(const std::vector<float>& v, const std::vector<int64_t>& shape) {
  return torch::tensor(v, torch::kFloat).reshape(shape);
}

}  // namespace

TEST(StandardUserData, NpyOfEveryDtypeReadsAsNumpyWroteIt) {
  if (!numpy_and_pillow()) GTEST_SKIP() << "numpy (the independent writer) is not installed";
  TempDir tmp;
  python(tmp.path(), R"(
import numpy as np
base = np.arange(24).reshape(2, 3, 4) - 7
for t in ['f4', 'f8', 'i1', 'i2', 'i4', 'i8', 'u1', 'u2', 'u4', 'u8']:
    a = base.astype(t) if t[0] != 'u' else (base + 7).astype(t)
    np.save(')" + tmp.path().string() + R"(/' + t + '.npy', a)
np.save(')" + tmp.path().string() + R"(/b1.npy', base % 3 == 0)
np.save(')" + tmp.path().string() + R"(/fortran.npy', np.asfortranarray(base.astype('f4')))
np.save(')" + tmp.path().string() + R"(/big.npy', base.astype('>f4'))
)");
  torch::Tensor base = torch::arange(24, torch::kLong).reshape({2, 3, 4}) - 7;
  for (std::string t : {"f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"}) {
    const std::string f = (tmp.path() / (t + ".npy")).string();
    torch::Tensor got = npy_tensor(flowkit::io::read_npy_array(f), f);
    torch::Tensor want = t[0] == 'u' ? base + 7 : base;
    ASSERT_EQ(got.sizes(), want.sizes()) << t;
    EXPECT_TRUE(torch::equal(got.to(torch::kLong), want)) << t;
  }
  const std::string b1 = (tmp.path() / "b1.npy").string();
  EXPECT_TRUE(torch::equal(npy_tensor(flowkit::io::read_npy_array(b1), b1), torch::remainder(base, 3) == 0));
  // Fortran order (numpy's layout of a transposed array) comes back in C order.
  const std::string fo = (tmp.path() / "fortran.npy").string();
  flowkit::io::NpyArray fa = flowkit::io::read_npy_array(fo);
  EXPECT_TRUE(fa.fortran_order);
  EXPECT_TRUE(torch::equal(npy_tensor(fa, fo).to(torch::kLong), base));
  const std::string big = (tmp.path() / "big.npy").string();
  EXPECT_THAT_MSG(error_of([&] { flowkit::io::read_npy_array(big); }), big);
  EXPECT_THAT_MSG(error_of([&] { flowkit::io::read_npy_array(big); }), "unsupported dtype '>f4'");
}

TEST(StandardUserData, CsvHeaderLabelAndConditionColumns) {
  TempDir tmp;
  const fs::path f = tmp.path() / "table.csv";
  write_text(f, "a,b,\"y\",temp\n1,2,0,10\n\n3,4.5,2,20\n-1,1e-3,1,30\n");
  TensorData d = read_tensor_csv(f.string(), "y", {"temp"});
  EXPECT_EQ(d.columns, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(torch::allclose(d.x, torch::tensor({{1.0f, 2.0f}, {3.0f, 4.5f}, {-1.0f, 1e-3f}})));
  EXPECT_TRUE(torch::equal(d.labels, torch::tensor({0, 2, 1}, torch::kLong)));
  EXPECT_TRUE(torch::allclose(d.condition, torch::tensor({{10.0f}, {20.0f}, {30.0f}})));
  // Without a header every column is data.
  write_text(f, "1,2\n3,4\n");
  EXPECT_EQ(read_tensor_csv(f.string(), "", {}).x.size(1), 2);
  // Errors name the file, the line and the column.
  write_text(f, "a,b\n1,2\n3\n");
  EXPECT_THAT_MSG(error_of([&] { read_tensor_csv(f.string(), "", {}); }), f.string() + "', line 3: expected 2 comma-separated fields, found 1");
  write_text(f, "a,b\n1,2\n3,x4\n");
  EXPECT_THAT_MSG(error_of([&] { read_tensor_csv(f.string(), "", {}); }), "line 3, column 'b': 'x4' is not a number");
  write_text(f, "a,y\n1,0.5\n");
  EXPECT_THAT_MSG(error_of([&] { read_tensor_csv(f.string(), "y", {}); }), "row 0: label 0.5");
  write_text(f, "a,b\n1,2\n");
  EXPECT_THAT_MSG(error_of([&] { read_tensor_csv(f.string(), "label", {}); }), "has no column 'label' (its columns: a, b)");
}

TEST(StandardUserData, SplitNormalisationAndTheUndoOnWriting) {
  TempDir tmp;
  const fs::path f = tmp.path() / "data.npy";
  auto gen = at::detail::createCPUGenerator(3);
  // 200 items [2, 3]: element k has mean k and std k + 1; element 5 constant.
  torch::Tensor mean = torch::arange(6, torch::kFloat), std = mean + 1;
  std[5] = 0;
  torch::Tensor x = (torch::randn({200, 6}, gen) * std + mean).reshape({200, 2, 3});
  flowkit::io::write_npy(f.string(), x.data_ptr<float>(), {200, 2, 3});
  TensorDomain d(tensor_options(f));
  EXPECT_EQ(d.item_shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(d.test_size(), 50);
  EXPECT_EQ(d.train_size(), 150);
  // The same seed, the same split; another seed, another.
  TensorDomainOptions other = tensor_options(f);
  other.split_seed = 1;
  torch::Generator g = at::detail::createCPUGenerator(0);
  EXPECT_TRUE(torch::equal(TensorDomain(tensor_options(f)).reference(50, g).at("x"), d.reference(50, g).at("x")));
  EXPECT_FALSE(torch::equal(TensorDomain(other).reference(50, g).at("x"), d.reference(50, g).at("x")));
  // The fitted statistics are the training rows' per-element mean and (population) std; the
  // constant element keeps scale 1.
  Split s = seeded_split(200, 0.25, 0);
  torch::Tensor train = x.index_select(0, s.train).to(torch::kDouble);
  const Normalization& n = d.normalization();
  EXPECT_TRUE(torch::allclose(n.shift.to(torch::kDouble), train.mean(0), 1e-5, 1e-5));
  torch::Tensor sd = train.std(0, false);
  EXPECT_TRUE(torch::allclose(n.scale.to(torch::kDouble).reshape({-1}).slice(0, 0, 5), sd.reshape({-1}).slice(0, 0, 5), 1e-5, 1e-5));
  EXPECT_NEAR(n.scale[1][1].item<double>(), 5.0, 1.0);
  EXPECT_EQ(n.scale.reshape({-1})[5].item<float>(), 1.0f);
  // Writing undoes it exactly: the held-out items written back are the file's rows.
  flowkit::Batch ref = d.reference(50, g);
  auto paths = d.write(ref, tmp.path().string(), "back");
  std::vector<int64_t> shape;
  torch::Tensor back = to_tensor(flowkit::io::read_npy((tmp.path() / "back.npy").string(), &shape), shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{50, 2, 3}));
  EXPECT_TRUE(torch::allclose(back, x.index_select(0, s.test), 1e-5, 1e-5));
  // The model-space held-out items are standardised with the training statistics.
  torch::Tensor z = ref.at("x").reshape({50, 6});
  EXPECT_LT(z.mean(0).abs().max().item<double>(), 0.5);
  // A row list overrides the fraction; bad lists are named.
  const fs::path rows = tmp.path() / "test_rows.txt";
  write_text(rows, "0\n5\n 7 \n");
  TensorDomainOptions listed = tensor_options(f);
  listed.test_rows_file = rows.string();
  TensorDomain l(listed);
  EXPECT_EQ(l.test_size(), 3);
  torch::Tensor first = l.reference(3, g).at("x");
  // The listed rows, in the order split_seed draws (the reference is a random sample of them).
  torch::Tensor order = shuffled(torch::tensor({0, 5, 7}, torch::kLong), 0);
  EXPECT_TRUE(torch::equal(std::get<0>(order.sort()), torch::tensor({0, 5, 7}, torch::kLong)));
  EXPECT_TRUE(torch::allclose(l.normalization().undo(first), x.index_select(0, order), 1e-5, 1e-5));
  write_text(rows, "0\n200\n");
  EXPECT_THAT_MSG(error_of([&] { TensorDomain bad(listed); }), rows.string() + "', entry 1: row 200 is outside");
  // NaN in the data names the row.
  x[17][1][1] = std::nanf("");
  flowkit::io::write_npy(f.string(), x.data_ptr<float>(), {200, 2, 3});
  EXPECT_THAT_MSG(error_of([&] { TensorDomain bad(tensor_options(f)); }), "row 17: a value is NaN");
}

TEST(StandardUserData, SavedNormalisationReplacesTheRefittedOne) {
  TempDir tmp;
  const fs::path f = tmp.path() / "data.npy";
  torch::Tensor x = torch::randn({100, 4}) * 3 + 1;
  flowkit::io::write_npy(f.string(), x.data_ptr<float>(), {100, 4});
  TensorDomain trained(tensor_options(f));
  flowkit::io::TensorDict state = trained.persistent_state();
  torch::Tensor y = x * 10;  // the file changes after training
  flowkit::io::write_npy(f.string(), y.data_ptr<float>(), {100, 4});
  TensorDomain reopened(tensor_options(f));
  EXPECT_FALSE(torch::allclose(reopened.normalization().scale, trained.normalization().scale));
  reopened.restore_state(state);
  EXPECT_TRUE(torch::equal(reopened.normalization().scale, trained.normalization().scale));
  EXPECT_TRUE(torch::equal(reopened.normalization().shift, trained.normalization().shift));
  // A state of another shape is refused.
  torch::Tensor z = torch::randn({100, 5});
  flowkit::io::write_npy(f.string(), z.data_ptr<float>(), {100, 5});
  TensorDomain wider(tensor_options(f));
  EXPECT_THAT_MSG(error_of([&] { wider.restore_state(state); }), "saved normalisation has shape [4]");
}

TEST(StandardUserData, SamplesTakeTheConditionsOfThePairedReferenceItems) {
  TempDir tmp;
  const fs::path f = tmp.path() / "t.csv";
  std::string text = "u,v,cls,c\n";
  for (int i = 0; i < 40; ++i) text += std::to_string(i) + "," + std::to_string(-i) + "," + std::to_string(i % 3) + "," + std::to_string(i * 0.5) + "\n";
  write_text(f, text);
  TensorDomainOptions o = tensor_options(f);
  o.label_column = "cls";
  o.condition_columns = {"c"};
  TensorDomain d(o);
  EXPECT_EQ(d.num_classes(), 3);
  EXPECT_EQ(d.condition_shapes().at("condition"), (std::vector<int64_t>{1}));
  torch::Generator g = at::detail::createCPUGenerator(0);
  flowkit::Batch ref = d.reference(10, g);
  // Each held-out row keeps its own label and condition (u = i: cls = i % 3, c = i / 2).
  torch::Tensor u = d.normalization().undo(ref.at("x")).select(1, 0);
  const Normalization& cn = d.condition_normalization();
  torch::Tensor cval = cn.undo(ref.at("condition")).select(1, 0);
  for (int64_t i = 0; i < 10; ++i) {
    const int64_t row = std::lround(u[i].item<double>());
    EXPECT_EQ(ref.at("label")[i].item<int64_t>(), row % 3);
    EXPECT_NEAR(cval[i].item<double>(), row * 0.5, 1e-4);
  }
  flowkit::Conditioning c = d.sample_conditions(0, 25, g);  // cycles through the 10 held-out rows
  for (int64_t i = 0; i < 25; ++i) {
    EXPECT_EQ(c.at("label")[i].item<int64_t>(), ref.at("label")[i % 10].item<int64_t>());
    EXPECT_FLOAT_EQ(c.at("condition")[i][0].item<float>(), ref.at("condition")[i % 10][0].item<float>());
  }
  // The CSV written back has the input's columns, labels and conditions in the data's units.
  flowkit::Batch out = ref;
  auto paths = d.write(out, tmp.path().string(), "s");
  std::ifstream in(tmp.path() / "s.csv");
  std::string head, row;
  std::getline(in, head);
  std::getline(in, row);
  EXPECT_EQ(head, "u,v,cls,c");
  // u, v, cls, c of the first reference row, in the file's units.
  std::vector<double> cells;
  std::stringstream ss(row);
  for (std::string cell; std::getline(ss, cell, ',');) cells.push_back(std::stod(cell));
  ASSERT_EQ(cells.size(), 4u);
  const int64_t r0 = std::lround(cells[0]);
  EXPECT_NEAR(cells[0], static_cast<double>(r0), 1e-4);
  EXPECT_NEAR(cells[1], -static_cast<double>(r0), 1e-4);
  EXPECT_EQ(std::lround(cells[2]), r0 % 3);
  EXPECT_NEAR(cells[3], r0 * 0.5, 1e-4);
  EXPECT_TRUE(fs::exists(tmp.path() / "s_labels.npy"));
}

// ---- images -------------------------------------------------------------------------------

namespace {
// A w x h RGB image whose pixel (x, y) is (x * 16 + c * 3 + y) % 256 for channel c.
std::vector<uint8_t> pattern(int w, int h) {
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) rgb[(static_cast<size_t>(y) * w + x) * 3 + c] = static_cast<uint8_t>((x * 16 + c * 3 + y) % 256);
  return rgb;
}
ImageFolderOptions image_options(const fs::path& folder, int64_t size) {
  ImageFolderOptions o;
  o.folder = folder.string();
  o.height = o.width = size;
  o.channels = 3;
  o.resize = "crop";
  o.test_fraction = 0.2;
  o.projections = 8;
  o.device = "cpu";
  return o;
}
}  // namespace

TEST(StandardUserData, ImageFolderDecodesOnceIntoOneByteStore) {
  TempDir tmp;
  const fs::path root = tmp.path() / "imgs";
  // Each file's pixels encode its class and index: pattern + 7 * (10 * class + index).
  const std::vector<std::string> names{"cat", "ant", "bee"};
  auto image_of = [](int cls, int i) {
    std::vector<uint8_t> p = pattern(8, 8);
    for (auto& v : p) v = static_cast<uint8_t>((v + 7 * (10 * cls + i)) % 256);
    return p;
  };
  for (int c = 0; c < 3; ++c) {
    fs::create_directories(root / names[c]);
    for (int i = 0; i < 10; ++i) flowkit::io::write_png_rgb((root / names[c] / (std::to_string(i) + ".png")).string(), 8, 8, image_of(c, i));
  }
  write_text(root / "ant" / "notes.txt", "not an image");
  ImageFolderDomain d(image_options(root, 8));
  EXPECT_EQ(d.classes(), (std::vector<std::string>{"ant", "bee", "cat"}));  // sorted
  EXPECT_EQ(d.pixels().scalar_type(), torch::kByte);
  EXPECT_EQ(d.pixels().numel(), 30 * 3 * 8 * 8);  // 1 byte per value: no float copy is kept
  EXPECT_EQ(d.train_size() + d.test_size(), 30);
  // Same size: each item is its file's pixels, channel-first, scaled to [-1, 1] per batch, and
  // its label is its folder's index among the sorted class names.
  torch::Generator g = at::detail::createCPUGenerator(0);
  flowkit::Batch b = d.train_batch(16, g);
  EXPECT_EQ(d.num_classes(), 3);
  auto file_of = [&](const torch::Tensor& item) {  // (class, index) whose image equals item
    torch::Tensor px = ((item + 1) * 127.5).round().to(torch::kInt);
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < 10; ++i) {
        std::vector<uint8_t> p = image_of(c, i);
        torch::Tensor want = torch::from_blob(p.data(), {8, 8, 3}, torch::kByte).permute({2, 0, 1}).to(torch::kInt);
        if (torch::equal(px, want)) return std::make_pair(c, i);
      }
    return std::make_pair(-1, -1);
  };
  for (int64_t k = 0; k < 16; ++k) {
    auto [c, i] = file_of(b.at("x")[k]);
    ASSERT_GE(c, 0) << "item " << k << " is no file's image";
    const int64_t sorted_index = names[c] == "ant" ? 0 : names[c] == "bee" ? 1 : 2;
    EXPECT_EQ(b.at("label")[k].item<int64_t>(), sorted_index);
  }
  // The written grid and NPY come back as pixel values.
  auto paths = d.write(b, tmp.path().string(), "s");
  std::vector<int64_t> shape;
  torch::Tensor npy = to_tensor(flowkit::io::read_npy((tmp.path() / "s.npy").string(), &shape), shape);
  EXPECT_EQ(shape, (std::vector<int64_t>{16, 3, 8, 8}));
  EXPECT_TRUE(torch::allclose(npy[0], ((b.at("x")[0] + 1) * 127.5).clamp(0, 255), 1e-3, 1e-3));
  int w = 0, h = 0;
  flowkit::io::read_png_size((tmp.path() / "s.png").string(), &w, &h);
  EXPECT_GT(w, 4 * 8);
}

TEST(StandardUserData, ResizeAveragesAreasAndCropsTheCentre) {
  TempDir tmp;
  // 8 x 4 (w x h) image of 2x2 blocks with known means; cropped to a square it keeps columns
  // 2..5, then shrinks 4x4 -> 2x2 by averaging each 2x2 block.
  std::vector<uint8_t> rgb(8 * 4 * 3);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 8; ++x)
      for (int c = 0; c < 3; ++c) rgb[(y * 8 + x) * 3 + c] = static_cast<uint8_t>(10 * x + 40 * y + c + ((x + y) % 2) * 2);
  const fs::path f = tmp.path() / "wide.png";
  flowkit::io::write_png_rgb(f.string(), 8, 4, rgb);
  std::vector<uint8_t> out(3 * 2 * 2);
  load_image_into(f.string(), 3, 2, 2, "crop", out.data());
  for (int c = 0; c < 3; ++c)
    for (int by = 0; by < 2; ++by)
      for (int bx = 0; bx < 2; ++bx) {
        double sum = 0;
        for (int y = 2 * by; y < 2 * by + 2; ++y)
          for (int x = 2 + 2 * bx; x < 4 + 2 * bx; ++x) sum += rgb[(y * 8 + x) * 3 + c];
        EXPECT_EQ(out[(c * 2 + by) * 2 + bx], static_cast<uint8_t>(std::lround(sum / 4))) << c << by << bx;
      }
  // Gray by luminance.
  std::vector<uint8_t> gray(4);
  load_image_into(f.string(), 1, 2, 2, "crop", gray.data());
  const double lum = 0.299 * out[0] + 0.587 * out[4] + 0.114 * out[8];
  EXPECT_NEAR(gray[0], lum, 1.0);
}

TEST(StandardUserData, JpegDecodesAsPillowDecodesIt) {
  if (!numpy_and_pillow()) GTEST_SKIP() << "Pillow (the independent encoder and decoder) is not installed";
  TempDir tmp;
  python(tmp.path(), R"(
import numpy as np
from PIL import Image
y, x = np.mgrid[0:24, 0:20]
a = np.stack([x * 12, y * 10, (x + y) * 5], -1).astype(np.uint8)
Image.fromarray(a).save(')" + tmp.path().string() + R"(/p.jpg', quality=90)
Image.fromarray(a[..., 0]).save(')" + tmp.path().string() + R"(/g.jpg', quality=90)
np.save(')" + tmp.path().string() + R"(/p.npy', np.asarray(Image.open(')" + tmp.path().string() + R"(/p.jpg').convert('RGB')))
np.save(')" + tmp.path().string() + R"(/g.npy', np.asarray(Image.open(')" + tmp.path().string() + R"(/g.jpg').convert('RGB')))
)");
  for (const char* name : {"p", "g"}) {
    int w = 0, h = 0;
    std::vector<uint8_t> rgb = flowkit::io::read_image_rgb((tmp.path() / (std::string(name) + ".jpg")).string(), &w, &h);
    ASSERT_EQ(w, 20);
    ASSERT_EQ(h, 24);
    const std::string ref = (tmp.path() / (std::string(name) + ".npy")).string();
    torch::Tensor want = npy_tensor(flowkit::io::read_npy_array(ref), ref).to(torch::kInt);
    torch::Tensor got = torch::from_blob(rgb.data(), {24, 20, 3}, torch::kByte).to(torch::kInt);
    EXPECT_LE((got - want).abs().max().item<int>(), 1) << name;
  }
}

TEST(StandardUserData, BadImageFilesAreNamedOrSkipped) {
  TempDir tmp;
  const fs::path root = tmp.path() / "imgs";
  fs::create_directories(root / "a");
  auto image_of = [](int i) {
    std::vector<uint8_t> p = pattern(4, 4);
    for (auto& v : p) v = static_cast<uint8_t>(v + 11 * i);
    return p;
  };
  for (int i = 0; i < 6; ++i) flowkit::io::write_png_rgb((root / "a" / (std::to_string(i) + ".png")).string(), 4, 4, image_of(i));
  // A truncated PNG sorted before the good files (so the store is compacted) and a "JPEG"
  // that is text.
  std::ifstream good(root / "a" / "0.png", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(good)), {});
  std::ofstream(root / "a" / "00cut.png", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  write_text(root / "a" / "fake.jpg", "hello");
  ImageFolderOptions o = image_options(root, 4);
  const std::string e = error_of([&] { ImageFolderDomain d(o); });
  EXPECT_THAT_MSG(e, (root / "a" / "00cut.png").string());
  EXPECT_THAT_MSG(e, "skip_bad_files");
  o.skip_bad_files = true;
  ImageFolderDomain d(o);
  EXPECT_EQ(d.skipped_rows().skipped, 2);
  EXPECT_EQ(d.skipped_rows().rows, 8);
  ASSERT_EQ(d.pixels().size(0), 6);
  for (int i = 0; i < 6; ++i) {  // the good images, in order, each where it belongs
    std::vector<uint8_t> p = image_of(i);
    torch::Tensor want = torch::from_blob(p.data(), {4, 4, 3}, torch::kByte).permute({2, 0, 1});
    EXPECT_TRUE(torch::equal(d.pixels()[i], want)) << i;
  }
  // Images beside the class folders, and a folder without classes, are refused with the fix.
  flowkit::io::write_png_rgb((root / "stray.png").string(), 4, 4, pattern(4, 4));
  EXPECT_THAT_MSG(error_of([&] { list_images(root.string(), true); }), "outside the class sub-folders (e.g. 'stray.png')");
  EXPECT_THAT_MSG(error_of([&] { list_images((root / "a").string(), true); }), "labels: \"none\"");
  EXPECT_EQ(list_images(root.string(), false).files.size(), 9u);
  // A reopened run refuses a folder whose classes changed.
  flowkit::io::TensorDict state = d.persistent_state();
  fs::remove(root / "stray.png");
  fs::create_directories(root / "b");
  flowkit::io::write_png_rgb((root / "b" / "0.png").string(), 4, 4, pattern(4, 4));
  ImageFolderDomain changed(o);
  EXPECT_THAT_MSG(error_of([&] { changed.restore_state(state); }), "its labels would mean other classes");
}

// End to end through the host: a pipeline on a user's NPY file trains, its checkpoint carries
// the normalisation, and the run reopened after the file changed writes samples in the units
// it was trained on.
TEST(StandardUserData, ReopenedRunKeepsItsNormalisation) {
  if (!build_has_bundled_plugins()) GTEST_SKIP() << "no bundled plugins in this build";
  TempDir tmp;
  const fs::path f = tmp.path() / "points.npy";
  torch::Tensor x = torch::randn({400, 3}) * 0.1 + 50.0;  // far from the prior's scale
  flowkit::io::write_npy(f.string(), x.data_ptr<float>(), {400, 3});
  nlohmann::json doc = {
      {"name", "user_npy"},
      {"domain", {{"type", "standard.tensor"}, {"file", f.string()}}},
      {"path", {{"type", "standard.affine"}}},
      {"model", {{"type", "standard.mlp"}, {"hidden", 32}, {"layers", 2}}},
      {"loss", {{"type", "standard.cfm"}}},
      {"solver", {{"type", "standard.euler"}, {"steps", 10}}},
      {"train", {{"steps", 150}, {"batch_size", 64}, {"lr", 0.003}, {"checkpoint_every", 0}}},
      {"sample", {{"count", 200}}}};
  flowkit::core::PluginHost host(build_tree_only());
  {
    flowkit::core::Session s(resolve_pipeline(doc, host), host, run_in(tmp.path(), "run"));
    s.train();
  }
  torch::Tensor moved = x - 50.0;  // the data file is replaced after training
  flowkit::io::write_npy(f.string(), moved.data_ptr<float>(), {400, 3});
  auto session = flowkit::core::open_run((tmp.path() / "run").string(), host, "");
  auto files = session->sample();
  std::vector<int64_t> shape;
  torch::Tensor s = to_tensor(flowkit::io::read_npy((tmp.path() / "run" / "samples" / "samples.npy").string(), &shape), shape);
  ASSERT_EQ(shape, (std::vector<int64_t>{200, 3}));
  std::cout << "[ measured ] sample mean " << s.mean().item<double>() << " (trained on data of mean 50)\n";
  EXPECT_NEAR(s.mean().item<double>(), 50.0, 0.5);  // the trained normalisation, not the new file's
}

// The shipped user-data examples run as committed (briefly): their relative data paths are
// found beside the pipeline file, whatever the working directory.
TEST(StandardUserData, ExamplePipelinesRunBriefly) {
  if (!build_has_bundled_plugins()) GTEST_SKIP() << "no bundled plugins in this build";
  TempDir tmp;
  flowkit::core::PluginHost host(build_tree_only());
  for (const char* name : {"user_npy", "user_images"}) {
    const std::string file = std::string(PLUGIN_SOURCE_DIR) + "/examples/" + name + ".json";
    auto v = flowkit::core::validate_pipeline_file(file, host, {"train.steps=30", "train.checkpoint_every=0", "sample.count=20",
                                                                "eval.reference_count=20"});
    ASSERT_TRUE(v.ok()) << v.report();
    flowkit::core::Session s(v.pipeline, host, run_in(tmp.path(), name));
    s.train();
    nlohmann::json eval = s.evaluate();
    EXPECT_TRUE(eval.contains("energy_distance")) << eval.dump();
    auto files = s.sample();
    std::vector<int64_t> shape;
    flowkit::io::read_npy((tmp.path() / name / "samples" / "samples.npy").string(), &shape);
    EXPECT_EQ(shape[0], 20) << name;
    EXPECT_TRUE(fs::exists(tmp.path() / name / "samples" / "samples_labels.npy")) << name;
  }
}

TEST(StandardUserData, ReferenceMixesClassesOfASortedStore) {
  // Images are stored class by class; the first reference items still cover the classes.
  TempDir tmp;
  const fs::path root = tmp.path() / "imgs";
  for (int c = 0; c < 5; ++c) {
    fs::create_directories(root / std::to_string(c));
    for (int i = 0; i < 40; ++i) flowkit::io::write_png_rgb((root / std::to_string(c) / (std::to_string(i) + ".png")).string(), 4, 4, pattern(4, 4));
  }
  ImageFolderOptions o = image_options(root, 4);
  o.test_fraction = 0.5;
  ImageFolderDomain d(o);
  torch::Generator g = at::detail::createCPUGenerator(0);
  torch::Tensor labels = d.reference(20, g).at("label");
  EXPECT_GE(std::get<0>(at::_unique(labels)).size(0), 4) << labels;
  // A test folder: its images are the reference, in a seeded order, classes mixed.
  const fs::path test_root = tmp.path() / "test";
  for (int c = 0; c < 5; ++c) {
    fs::create_directories(test_root / std::to_string(c));
    for (int i = 0; i < 6; ++i) flowkit::io::write_png_rgb((test_root / std::to_string(c) / (std::to_string(i) + ".png")).string(), 4, 4, pattern(4, 4));
  }
  o.test_folder = test_root.string();
  ImageFolderDomain t(o);
  EXPECT_EQ(t.test_size(), 30);
  EXPECT_EQ(t.train_size(), 200);
  EXPECT_GE(std::get<0>(at::_unique(t.reference(8, g).at("label"))).size(0), 3);
}

TEST(StandardUserData, EdgeCasesOfTensorFilesAreNamed) {
  if (!numpy_and_pillow()) GTEST_SKIP() << "numpy is not installed";
  TempDir tmp;
  const std::string dir = tmp.path().string();
  python(tmp.path(), "import numpy as np\nnp.save('" + dir + "/empty.npy', np.zeros((0, 3), 'f4'))\nnp.save('" + dir +
                         "/flat0.npy', np.zeros((10, 0), 'f4'))\nnp.save('" + dir + "/big.npy', np.array([2**63 + 5], 'u8'))\n");
  EXPECT_THAT_MSG(error_of([&] { TensorDomain d(tensor_options(tmp.path() / "empty.npy")); }), "holds no items");
  EXPECT_THAT_MSG(error_of([&] { TensorDomain d(tensor_options(tmp.path() / "flat0.npy")); }), "its items hold no values");
  const std::string big = dir + "/big.npy";
  EXPECT_THAT_MSG(error_of([&] { npy_tensor(flowkit::io::read_npy_array(big), big); }), "is too large");
  const fs::path f = tmp.path() / "t.csv";
  write_text(f, "a,b\n");
  EXPECT_THAT_MSG(error_of([&] { read_tensor_csv(f.string(), "", {}); }), "holds no data rows");
  write_text(f, "");
  EXPECT_THAT_MSG(error_of([&] { read_tensor_csv(f.string(), "", {}); }), "holds no data rows");
  // A NaN condition is named like a NaN item.
  write_text(f, "x,c\n1,2\n2,nan\n3,1\n4,0\n");
  TensorDomainOptions o = tensor_options(f);
  o.condition_columns = {"c"};
  EXPECT_THAT_MSG(error_of([&] { TensorDomain d(o); }), "(conditions), row 1: a value is NaN");
  // A UTF-8 byte-order mark does not hide the header's first column.
  write_text(f, "\xEF\xBB\xBFlabel,x\n0,1\n1,2\n");
  EXPECT_TRUE(torch::equal(read_tensor_csv(f.string(), "label", {}).labels, torch::tensor({0, 1}, torch::kLong)));
}

TEST(StandardUserData, TruncatedJpegAndSixteenBitPngDecodeAsPillowSays) {
  if (!numpy_and_pillow()) GTEST_SKIP() << "Pillow is not installed";
  TempDir tmp;
  const std::string dir = tmp.path().string();
  python(tmp.path(), R"(
import numpy as np
from PIL import Image
y, x = np.mgrid[0:32, 0:32]
Image.fromarray(np.stack([x * 8, y * 8, x + y], -1).astype(np.uint8)).save(')" + dir + R"(/full.jpg', quality=90)
b = open(')" + dir + R"(/full.jpg', 'rb').read()
open(')" + dir + R"(/cut.jpg', 'wb').write(b[:len(b) // 2])
a = (x * 2048).astype(np.uint16)
Image.fromarray(a.astype(np.int32), mode='I').save(')" + dir + R"(/deep.png')
np.save(')" + dir + R"(/deep.npy', np.asarray(Image.open(')" + dir + R"(/deep.png').convert('I')) >> 8)
)");
  EXPECT_THAT_MSG(error_of([&] { int w, h; flowkit::io::read_image_rgb(dir + "/cut.jpg", &w, &h); }), dir + "/cut.jpg' is not a readable JPEG");
  int w = 0, h = 0;
  std::vector<uint8_t> rgb = flowkit::io::read_image_rgb(dir + "/deep.png", &w, &h);
  const std::string ref = dir + "/deep.npy";
  torch::Tensor want = npy_tensor(flowkit::io::read_npy_array(ref), ref).to(torch::kInt);
  torch::Tensor got = torch::from_blob(rgb.data(), {h, w, 3}, torch::kByte).select(2, 0).to(torch::kInt);
  EXPECT_LE((got - want).abs().max().item<int>(), 1);  // values scaled, not gamma-encoded
}
