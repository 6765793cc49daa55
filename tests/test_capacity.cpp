// Knowledge capacity (include/stem/capacity.h): the estimator on cases with a
// known answer (a model sure and right about every value holds exactly the
// table's entropy; a uniform guesser and a confidently wrong one hold 0; one
// that knows half the people holds half), the biographies (drawn from the
// seed, values in range, every fact in the text in both phrasings, the file
// round trip and its errors), and measure_knowledge on a model end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "cli_test_util.h"
#include "stem/capacity.h"
#include "train_test_util.h"

namespace stem {
namespace {

using LogProbs = std::vector<std::vector<std::vector<double>>>;

// Every value's log-likelihood: `sure` nats above the rest for `pick(p, a)`.
LogProbs table(const Bios& b, int64_t people, double sure, const std::function<int32_t(size_t, size_t)>& pick) {
  LogProbs lp(static_cast<size_t>(people));
  for (size_t p = 0; p < lp.size(); ++p)
    for (size_t a = 0; a < b.attributes.size(); ++a) {
      std::vector<double> v(b.attributes[a].values.size(), -50.0);
      v[static_cast<size_t>(pick(p, a))] = -50.0 + sure;
      lp[p].push_back(v);
    }
  return lp;
}

TEST(Capacity, AModelSureAndRightHoldsExactlyTheTablesEntropy) {
  auto b = make_bios(40, 3);
  ASSERT_TRUE(b.ok()) << b.status().message();
  const double entropy = 40 * (std::log2(100.0) + std::log2(64.0) + std::log2(40.0) + std::log2(16.0) + std::log2(64.0));
  EXPECT_NEAR(b->entropy_bits(), entropy, 1e-9);
  auto right = [&](size_t p, size_t a) { return b->value_of[p][a]; };
  const Knowledge perfect = knowledge_bits(*b, table(*b, 40, 1000.0, right));  // p(true) = 1 to double precision
  EXPECT_NEAR(perfect.bits, entropy, 1e-6);
  EXPECT_NEAR(perfect.max_bits, entropy, 1e-9);
  for (const AttributeKnowledge& x : perfect.attributes) {
    EXPECT_EQ(x.accuracy, 1.0);
    EXPECT_NEAR(x.bits, x.max_bits, 1e-6);
  }
  const Knowledge uniform = knowledge_bits(*b, table(*b, 40, 0.0, right));
  EXPECT_NEAR(uniform.bits, 0.0, 1e-6);
  auto wrong = [&](size_t p, size_t a) {
    return static_cast<int32_t>((b->value_of[p][a] + 1) % static_cast<int32_t>(b->attributes[a].values.size()));
  };
  EXPECT_EQ(knowledge_bits(*b, table(*b, 40, 1000.0, wrong)).bits, 0.0);  // clamped, never negative
  // Half the people known for sure, the other half guessed uniformly.
  LogProbs half = table(*b, 40, 1000.0, right);
  for (size_t p = 20; p < 40; ++p)
    for (auto& v : half[p]) std::fill(v.begin(), v.end(), -3.0);
  EXPECT_NEAR(knowledge_bits(*b, half).bits, entropy / 2, 1e-6);
  // Known with probability 1/2 (the true value e^0 against the rest summing to 1): one bit less each.
  LogProbs halfsure(40);
  for (size_t p = 0; p < 40; ++p)
    for (size_t a = 0; a < b->attributes.size(); ++a) {
      const size_t S = b->attributes[a].values.size();
      std::vector<double> v(S, std::log(1.0 / static_cast<double>(S - 1)));
      v[static_cast<size_t>(b->value_of[p][a])] = 0.0;
      halfsure[p].push_back(v);
    }
  EXPECT_NEAR(knowledge_bits(*b, halfsure).bits, entropy - 40 * 5, 1e-6);
}

TEST(Capacity, BiographiesFromTheSeedWithEveryFactInTheText) {
  auto a = make_bios(300, 7), same = make_bios(300, 7), other = make_bios(300, 8);
  ASSERT_TRUE(a.ok() && same.ok() && other.ok());
  EXPECT_EQ(a->people, same->people);
  EXPECT_EQ(a->value_of, same->value_of);
  EXPECT_NE(a->people, other->people);
  EXPECT_EQ(std::set<std::string>(a->people.begin(), a->people.end()).size(), 300u);
  ASSERT_EQ(a->attributes.size(), 5u);
  EXPECT_EQ(a->attributes[0].prompt, "{n} was born in the year");
  const std::string text = bios_text(*a);
  for (size_t p = 0; p < 300; p += 37) {
    const std::string& n = a->people[p];
    const std::string year = a->attributes[0].values[static_cast<size_t>(a->value_of[p][0])];
    EXPECT_NE(text.find(n + " was born in the year " + year + ".\n"), std::string::npos) << n;
    EXPECT_NE(text.find("The birth of " + n + " took place in " + year + ".\n"), std::string::npos) << n;
  }
  EXPECT_FALSE(make_bios(0, 1).ok());
  EXPECT_FALSE(make_bios(1000000, 1).ok());
}

class CapacityFiles : public test::TempDirTest {};

TEST_F(CapacityFiles, RoundTripAndErrors) {
  auto b = make_bios(25, 1);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(write_bios(*b, p("bios.json")).ok());
  auto back = read_bios(p("bios.json"));
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->people, b->people);
  EXPECT_EQ(back->value_of, b->value_of);
  EXPECT_EQ(back->attributes[3].values, b->attributes[3].values);
  write("bad.json", R"({"format": "stem-bios", "attributes": [{"name": "x", "prompt": "{n} is", "values": ["a", "b"]}],
                        "people": [{"name": "A B", "values": [2]}]})");
  auto bad = read_bios(p("bad.json"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(p("bad.json") + ": person A B: value 2 of x is out of range"), std::string::npos)
      << bad.status().message();
  write("other.json", R"({"format": "something"})");
  EXPECT_FALSE(read_bios(p("other.json")).ok());
}

TEST_F(CapacityFiles, MeasuredOnAModelEndToEnd) {
  ModelConfig c = test::two_layer_config(400);
  c.ffn_types = {FfnType::Stem, FfnType::Dense};
  auto m = Model::init(c, 5);
  ASSERT_TRUE(m.ok());
  auto tok = Tokenizer::load(test::tiny().data + "/tokenizer.model");
  ASSERT_TRUE(tok.ok());
  auto b = make_bios(6, 2);
  ASSERT_TRUE(b.ok());
  int64_t calls = 0;
  auto k = measure_knowledge(*m, *tok, *b, 4, [&](int64_t, int64_t) { ++calls; });
  ASSERT_TRUE(k.ok()) << k.status().message();
  EXPECT_EQ(k->people, 4);
  EXPECT_EQ(calls, 4 * 5);
  EXPECT_GE(k->bits, 0.0);
  EXPECT_LT(k->bits, 0.05 * k->max_bits);  // random weights know next to nothing
  EXPECT_NEAR(k->max_bits, b->entropy_bits() * 4 / 6, 1e-9);
  EXPECT_DOUBLE_EQ(k->bits_per_param, k->bits / static_cast<double>(m->n_parameters()));
}

}  // namespace
}  // namespace stem
