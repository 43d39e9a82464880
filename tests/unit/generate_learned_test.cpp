// End to end: a small byte-level GPT trained in-process with the serial Trainer
// on the embedded synthetic corpus must continue templated prompts with the
// corpus's structure under greedy KV-cached generation, while the same checks
// fail for the untrained model. Also: evaluate_validation() reproduces the
// Trainer's validation loss exactly. (~13 s single-threaded in Release.)
#include <cctype>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "pp3d/model/generate.h"
#include "pp3d/train/inference.h"
#include "pp3d/train/trainer.h"

using namespace pp3d;

namespace {

std::string greedy(Gpt& model, const std::string& prompt, int64_t n) {
  GenerateOptions g;
  g.max_new_tokens = n;
  g.sampling.temperature = 0.0f;
  return decode_tokens(generate(model, encode_bytes(prompt), g), 256);
}

bool starts_with_any(const std::string& s, const std::vector<std::string>& words) {
  for (const auto& w : words)
    if (s.rfind(w, 0) == 0) return true;
  return false;
}

// The structure checks, each a (prompt, continuation test) pair; returns how many pass.
int structure_checks(Gpt& model, bool trained) {
  const std::vector<std::string> colors = {"red ", "blue ", "green ", "yellow ", "black ", "white ", "orange ",
                                           "purple "};
  const std::vector<std::string> objects = {"apple", "pear", "book", "ball", "coin", "cup", "hat", "key",
                                            "kite",  "shell", "stone", "card", "plum", "egg", "pen", "lamp"};
  int passed = 0;
  // 1. The template goes on with "<name> has " ("..., so alice has 7 apples.").
  const std::vector<std::string> names = {"alice", "bob",   "carol", "dave",  "erin",  "frank", "grace", "heidi",
                                          "ivan",  "judy",  "karl",  "laura", "oscar", "peggy", "trent", "wendy"};
  const std::string c1 = greedy(model, "alice has 3 apples and gets 4 more, so ", 12);
  const std::size_t sp = c1.find(' ');
  passed += sp != std::string::npos && starts_with_any(c1, names) && c1.compare(sp, 5, " has ") == 0;
  // 2. "the <color> <object> is next to the " is followed by a color and an object.
  const std::string c2 = greedy(model, "the red apple is next to the ", 14);
  bool ok2 = starts_with_any(c2, colors);
  if (ok2) {
    const std::string rest = c2.substr(c2.find(' ') + 1);
    ok2 = starts_with_any(rest, objects);
  }
  passed += ok2;
  // 3. Arithmetic sentences end in a number and a full stop: "<a> plus <b> is <digits>."
  const std::string c3 = greedy(model, "2 plus 3 is ", 4);
  std::size_t d = 0;
  while (d < c3.size() && std::isdigit(static_cast<unsigned char>(c3[d]))) ++d;
  passed += d >= 1 && d <= 2 && d < c3.size() && c3[d] == '.';
  UNSCOPED_INFO((trained ? "trained" : "untrained") << " model: [" << c1 << "] [" << c2 << "] [" << c3 << "]");
  return passed;
}

}  // namespace

TEST_CASE("a model trained on the synthetic corpus generates its structure, an untrained one does not",
          "[generate][train]") {
  TrainConfig c;
  c.num_layers = 2;
  c.hidden_size = 64;
  c.num_heads = 4;
  c.seq_len = 64;
  c.micro_batch_size = 16;
  c.max_steps = 500;  // ~13 s single-threaded; 300 steps at lr 2e-3 do not learn the templates yet
  c.lr = 4e-3f;
  c.warmup_steps = 20;
  c.eval_batches = 3;
  c.quiet = true;
  Trainer t(c);
  REQUIRE(structure_checks(t.model(), false) == 0);
  for (int64_t s = 0; s < c.max_steps; ++s) (void)t.train_step();
  const int passed = structure_checks(t.model(), true);
  CHECK(passed == 3);

  // pp3d-eval's number is the Trainer's val_loss for the same settings.
  const double val = t.evaluate();
  EvalOptions o;
  o.batches = c.eval_batches;
  o.batch_size = c.micro_batch_size;
  o.seq_len = c.seq_len;
  o.seed = c.seed;
  auto data = std::make_shared<TokenDataset>(t.data().dataset());
  const EvalResult r = evaluate_validation(t.model(), data, o);
  CHECK(r.loss == val);
  CHECK(r.tokens == 3 * 16 * 64);
  CHECK(r.perplexity == Approx(std::exp(val)).epsilon(1e-12));
  
  CHECK(val < 2.0);  // learned well beyond the unigram entropy (3.05 nats)
  o.seed = c.seed + 1;  // other windows, another value: the comparison above can fail
  CHECK(evaluate_validation(t.model(), data, o).loss != val);
}
