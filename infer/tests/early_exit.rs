//! The engine on exits whose confidences are set by hand: each sample leaves where it should,
//! in input order, at its analytic cost; thresholds at 1.0 give the full-depth answers; the
//! simulation calibration relies on makes the engine's decisions; calibration meets budgets.

use burn::backend::NdArray;
use burn::prelude::*;
use burn::tensor::Distribution;
use dmpo_infer::{
    Budget, Criterion, ExitPolicy, ExitScores, MultiExit, calibrate, collect_scores,
    run_early_exit, simulate,
};
use dmpo_model::dmpo::{DmpoConfig, StageCost};
use dmpo_model::vit::VitConfig;

type B = NdArray;
const CLASSES: usize = 4;
/// Exit at which each sample (by index) is confident.
const CONFIDENT_AT: [usize; 7] = [0, 2, 1, 0, 2, 1, 1];

/// A 3-exit model whose "tokens" carry the sample's id: exit k is confident (class (k+i) mod 4)
/// only for the samples `i` with `CONFIDENT_AT[i] == k`, and lukewarm otherwise.
struct Scripted {
    tables: Vec<Tensor<B, 2>>,
    /// Which exit heads ran, in order.
    heads_run: std::cell::RefCell<Vec<usize>>,
}

impl Scripted {
    fn new(device: &burn::tensor::Device<B>) -> Self {
        let n = CONFIDENT_AT.len();
        let tables = (0..3)
            .map(|k| {
                let mut t = vec![0f32; n * CLASSES];
                for (i, &at) in CONFIDENT_AT.iter().enumerate() {
                    if at == k {
                        t[i * CLASSES + (k + i) % CLASSES] = 12.0;
                    } else {
                        t[i * CLASSES + (i + 1) % CLASSES] = 1.0;
                    }
                }
                Tensor::from_data(TensorData::new(t, [n, CLASSES]), device)
            })
            .collect();
        Self {
            tables,
            heads_run: Default::default(),
        }
    }
}

impl MultiExit<B> for Scripted {
    fn num_exits(&self) -> usize {
        3
    }
    fn embed(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let n = images.dims()[0];
        images.reshape([n, 1, 1])
    }
    fn forward_trunk(&self, _k: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        x
    }
    fn forward_exit(&self, k: usize, h: Tensor<B, 3>) -> Tensor<B, 2> {
        self.heads_run.borrow_mut().push(k);
        let n = h.dims()[0];
        let rows = CONFIDENT_AT.len();
        let ids = h.reshape([n, 1]);
        let range = Tensor::<B, 1, Int>::arange(0..rows as i64, &ids.device())
            .float()
            .reshape([1, rows]);
        let one_hot = ids.equal(range).float();
        one_hot.matmul(self.tables[k].clone())
    }
    fn stage_costs(&self) -> Vec<StageCost> {
        vec![
            StageCost {
                trunk: 100,
                exit: 10,
            },
            StageCost {
                trunk: 100,
                exit: 10,
            },
            StageCost {
                trunk: 100,
                exit: 1,
            },
        ]
    }
}

fn ids(device: &burn::tensor::Device<B>) -> Tensor<B, 4> {
    let n = CONFIDENT_AT.len();
    let v: Vec<f32> = (0..n).map(|i| i as f32).collect();
    Tensor::from_data(TensorData::new(v, [n, 1, 1, 1]), device)
}

#[test]
fn each_sample_leaves_where_it_is_confident_in_input_order_at_its_analytic_cost() {
    let device = Default::default();
    let model = Scripted::new(&device);
    let policy = ExitPolicy {
        criterion: Criterion::MaxProb,
        thresholds: vec![0.9, 0.9],
    };
    let preds = run_early_exit(&model, ids(&device), &policy).unwrap();
    let cost = [110, 220, 321];
    for (i, p) in preds.iter().enumerate() {
        let k = CONFIDENT_AT[i];
        assert_eq!(p.exit, k, "sample {i}");
        assert_eq!(p.class, (k + i) % CLASSES, "sample {i}");
        assert_eq!(p.macs, cost[k], "sample {i}");
        assert!(p.confidence > 0.99);
        assert!((p.probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    // Margin and entropy criteria route the same way here.
    for criterion in [Criterion::Margin, Criterion::Entropy] {
        let policy = ExitPolicy {
            criterion,
            thresholds: vec![0.8, 0.8],
        };
        let exits: Vec<usize> = run_early_exit(&model, ids(&device), &policy)
            .unwrap()
            .iter()
            .map(|p| p.exit)
            .collect();
        assert_eq!(exits, CONFIDENT_AT.to_vec(), "{criterion:?}");
    }
}

#[test]
fn thresholds_at_one_run_everyone_to_the_last_exit_without_the_early_heads() {
    let device = Default::default();
    let model = Scripted::new(&device);
    let preds = run_early_exit(&model, ids(&device), &ExitPolicy::full_depth(3)).unwrap();
    // Three trunks and the last head only: exits that can never fire are not computed.
    assert!(
        preds.iter().all(|p| p.exit == 2 && p.macs == 301),
        "{preds:?}"
    );
    assert_eq!(*model.heads_run.borrow(), vec![2]);
}

#[test]
fn an_exit_that_never_fires_is_skipped_and_not_charged() {
    let device = Default::default();
    let model = Scripted::new(&device);
    let policy = ExitPolicy {
        criterion: Criterion::MaxProb,
        thresholds: vec![1.0, 0.9],
    };
    let preds = run_early_exit(&model, ids(&device), &policy).unwrap();
    assert_eq!(*model.heads_run.borrow(), vec![1, 2]);
    for (i, p) in preds.iter().enumerate() {
        let expected = if CONFIDENT_AT[i] == 1 {
            (1, 210)
        } else {
            (2, 311)
        };
        assert_eq!((p.exit, p.macs), expected, "sample {i}");
    }
    assert_eq!(policy.exit_costs(&model.stage_costs()), vec![100, 210, 311]);
}

fn tiny_dmpo(device: &burn::tensor::Device<B>) -> dmpo_model::dmpo::DmpoModel<B> {
    let vit = VitConfig::tiny().init::<B>(device);
    DmpoConfig::new(5).init(vit, device).unwrap()
}

#[test]
fn on_a_real_model_full_depth_equals_the_last_exit_and_zero_thresholds_the_first() {
    let device = Default::default();
    let model = tiny_dmpo(&device);
    let x = Tensor::<B, 4>::random([6, 3, 16, 16], Distribution::Default, &device);
    let all = model.forward_exits(x.clone());
    let probs = |t: Tensor<B, 2>| -> Vec<f32> {
        burn::tensor::activation::softmax(t, 1)
            .into_data()
            .to_vec()
            .unwrap()
    };
    let last = probs(all[3].clone());
    let preds = run_early_exit(&model, x.clone(), &ExitPolicy::full_depth(4)).unwrap();
    for (i, p) in preds.iter().enumerate() {
        assert_eq!(p.exit, 3);
        assert_eq!(p.probs, last[i * 5..(i + 1) * 5].to_vec());
    }
    let first = probs(all[0].clone());
    let eager = ExitPolicy {
        criterion: Criterion::MaxProb,
        thresholds: vec![0.0; 3],
    };
    for (i, p) in run_early_exit(&model, x, &eager)
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(p.exit, 0);
        assert_eq!(p.probs, first[i * 5..(i + 1) * 5].to_vec());
    }
}

#[test]
fn simulation_on_scores_makes_the_engines_decisions() {
    let device = Default::default();
    let model = tiny_dmpo(&device);
    let x = Tensor::<B, 4>::random([16, 3, 16, 16], Distribution::Default, &device);
    let labels: Vec<usize> = (0..16).map(|i| i % 5).collect();
    let scores = collect_scores(
        &model,
        [(x.clone(), labels)],
        Criterion::MaxProb,
        model.backbone_macs(),
    );
    // Thresholds at the median confidence of each exit: some leave, some continue.
    let thresholds: Vec<f32> = (0..3)
        .map(|k| {
            let mut c: Vec<f32> = scores.confidence.iter().map(|s| s[k]).collect();
            c.sort_by(f32::total_cmp);
            c[c.len() / 2]
        })
        .collect();
    let policy = ExitPolicy {
        criterion: Criterion::MaxProb,
        thresholds,
    };
    // The same with the middle exit switched off (its head is then skipped and not charged).
    let mut skipping = policy.clone();
    skipping.thresholds[1] = 1.0;
    for policy in [policy, skipping] {
        let sim = simulate(&scores, &policy);
        let preds = run_early_exit(&model, x.clone(), &policy).unwrap();
        let mut hist = vec![0; 4];
        preds.iter().for_each(|p| hist[p.exit] += 1);
        assert_eq!(hist, sim.exit_histogram, "{policy:?}");
        let mean = preds.iter().map(|p| p.macs as f64).sum::<f64>() / 16.0;
        assert!((mean - sim.mean_macs).abs() < 1e-6, "{policy:?}");
    }
}

/// Scores where later exits are more confident and more often right, like a trained model's.
fn synthetic_scores(n: usize, seed: u64) -> ExitScores {
    let mut state = seed;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let (mut confidence, mut correct) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let difficulty = next();
        let c: Vec<f32> = (0..4)
            .map(|k| (1.0 - difficulty * (1.0 - 0.2 * k as f32) + 0.1 * next()).clamp(0.0, 1.0))
            .collect();
        let ok: Vec<bool> = c.iter().map(|&c| next() < c).collect();
        confidence.push(c);
        correct.push(ok);
    }
    ExitScores {
        criterion: Criterion::MaxProb,
        confidence,
        correct,
        // Cumulative 26, 51, 76, 101 MACs with every head running.
        stages: [(25, 1), (24, 1), (24, 1), (24, 1)]
            .map(|(trunk, exit)| StageCost { trunk, exit })
            .to_vec(),
        full_macs: 100,
        saved: Vec::new(),
        skippable: 0,
    }
}

#[test]
fn calibration_on_held_out_meets_the_budget_on_a_test_split_within_five_percent() {
    let held_out = synthetic_scores(3000, 1);
    let test = synthetic_scores(3000, 2);
    for budget in [0.3, 0.5, 0.7, 0.9] {
        let (policy, on_held_out) = calibrate(&held_out, Budget::Fraction(budget)).unwrap();
        assert!(on_held_out.mean_macs <= budget * 100.0 + 1e-9);
        let on_test = simulate(&test, &policy);
        let fraction = on_test.mean_macs / 100.0;
        assert!(
            (fraction - budget).abs() <= 0.05 * budget,
            "budget {budget}: test cost {fraction}"
        );
    }
    let err = calibrate(&held_out, Budget::Fraction(0.1)).unwrap_err();
    assert!(err.contains("below the cheapest exit"), "{err}");
}

#[test]
fn evaluation_writes_a_curve_as_json_csv_and_svg() {
    let report = dmpo_infer::evaluate(
        "synthetic",
        &synthetic_scores(1000, 3),
        &synthetic_scores(1000, 4),
        &[0.3, 0.5, 0.7, 0.9],
    );
    assert_eq!(report.curve.len(), 4);
    assert_eq!(report.full_depth.exit_histogram, vec![0, 0, 0, 1000]);
    // More compute buys accuracy on this data.
    assert!(report.curve[0].accuracy < report.curve[3].accuracy);
    let dir = tempfile::tempdir().unwrap();
    dmpo_infer::write_report(dir.path(), "curve", std::slice::from_ref(&report)).unwrap();
    let json = std::fs::read_to_string(dir.path().join("curve.json")).unwrap();
    let back: Vec<dmpo_infer::EvalReport> = serde_json::from_str(&json).unwrap();
    assert_eq!(back[0].curve.len(), report.curve.len());
    let csv = std::fs::read_to_string(dir.path().join("curve.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 5);
    let svg = std::fs::read_to_string(dir.path().join("curve.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("synthetic"),
        "{}",
        &svg[..100]
    );
}

#[test]
fn calibration_on_no_image_is_refused_rather_than_writing_thresholds_of_one() {
    let none = synthetic_scores(0, 1);
    let err = calibrate(&none, Budget::Fraction(0.5)).unwrap_err();
    assert!(err.contains("no held-out image"), "{err}");
    assert!(calibrate(&synthetic_scores(50, 1), Budget::Fraction(0.9)).is_ok());
}

/// DMPO+DyT: one budget covers exits and skipped tokens. Calibrated where the budget binds
/// (halfway between the cheapest exit and full depth, both net of the tokens skipped), the
/// engine takes the simulation's exits and spends its MACs, tokens saved included.
#[test]
fn combined_budget_calibration_with_token_dispatch_is_what_the_engine_does() {
    let device = Default::default();
    let vit = VitConfig::tiny().init::<B>(&device);
    let mut model = DmpoConfig::new(5)
        .with_dispatch(Some(dmpo_model::dyt::DispatchConfig::new()))
        .init(vit, &device)
        .unwrap();
    assert!(model.dispatches());
    let n = 32;
    let x = Tensor::<B, 4>::random([n, 3, 16, 16], Distribution::Default, &device);
    // Freshly initialised gates may keep nearly every token on these images: each dispatcher's
    // bias at the median of its logits, block by block, so that about half are skipped.
    let mut h = model.embed(x.clone());
    for i in 0..model.dispatchers.len() {
        let attended = model.backbone.blocks[i].forward_attention_residual(h.clone());
        let d = &mut model.dispatchers[i];
        let bias = d.proj.bias.as_ref().unwrap().val();
        let mut z: Vec<f32> = (d.logits(attended) - bias.unsqueeze::<2>())
            .into_data()
            .to_vec()
            .unwrap();
        z.sort_by(f32::total_cmp);
        let median = z[z.len() / 2];
        d.proj.bias = Some(burn::module::Param::from_tensor(Tensor::from_floats(
            [-median],
            &device,
        )));
        h = model
            .forward_block_with(i, h, dmpo_model::dyt::Dispatch::Hard)
            .0;
    }
    let labels: Vec<usize> = (0..n).map(|i| i % 5).collect();
    let scores = collect_scores(
        &model,
        [(x.clone(), labels)],
        Criterion::MaxProb,
        model.backbone_macs(),
    );
    let rate = scores.token_rate().expect("tokens were dispatched");
    assert!(
        rate > 0.05 && rate < 0.95,
        "the gates keep {rate} of the tokens"
    );

    let full = simulate(&scores, &ExitPolicy::full_depth(model.num_exits())).mean_macs;
    let first = scores.exit_macs()[0] as f64;
    let saved_first = (0..n).map(|i| scores.saved_by(i, 0) as f64).sum::<f64>() / n as f64;
    let cheapest = first - saved_first;
    let target = (cheapest + full) / 2.0;
    let (policy, sim) = calibrate(&scores, Budget::Macs(target)).unwrap();
    assert!(sim.mean_macs <= target, "{} > {target}", sim.mean_macs);
    assert!(
        sim.exit_histogram[..sim.exit_histogram.len() - 1]
            .iter()
            .sum::<usize>()
            > 0,
        "the budget binds: some samples leave early {sim:?}"
    );

    let preds = run_early_exit(&model, x, &policy).unwrap();
    let mut hist = vec![0; model.num_exits()];
    preds.iter().for_each(|p| hist[p.exit] += 1);
    assert_eq!(hist, sim.exit_histogram);
    let mean = preds.iter().map(|p| p.macs as f64).sum::<f64>() / n as f64;
    assert!(
        (mean - sim.mean_macs).abs() < 1e-6,
        "{mean} vs {}",
        sim.mean_macs
    );
    // Tokens saved are counted: no sample costs more than its exit with every token kept, and
    // together they cost less.
    let costs = policy.exit_costs(&model.stage_costs());
    assert!(preds.iter().all(|p| p.macs <= costs[p.exit]), "{preds:?}");
    let kept_all: u64 = preds.iter().map(|p| costs[p.exit]).sum();
    assert!(preds.iter().map(|p| p.macs).sum::<u64>() < kept_all);
}
