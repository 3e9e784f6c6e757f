//! An ML training pipeline: a typed config, one epoch per run of `train_model` (a
//! state that loops on itself), early stopping, and evaluation.
//!
//! The training is simulated: accuracy follows a fixed learning curve.
//!
//! Run: `cargo run --example ml_training`

use agent::prelude::*;

/// How to train.
#[derive(Clone, Debug, Serialize, Deserialize, TypedContextData)]
pub struct TrainingConfig {
    pub model_name: String,
    pub batch_size: u32,
    pub epochs: u32,
    pub learning_rate: f64,
}

/// What one epoch measured.
#[derive(Clone, Debug, Serialize, Deserialize, TypedContextData)]
pub struct TrainingMetrics {
    pub loss: f64,
    pub accuracy: f64,
    pub epoch: u32,
}

/// A simulated epoch: accuracy climbs towards 1 as 1 - 0.5^(epoch+1).
async fn train_one_epoch(config: &TrainingConfig, epoch: u32) -> TrainingMetrics {
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let accuracy = 1.0 - 0.5f64.powi(epoch as i32 + 1) * (1.0 - config.learning_rate);
    TrainingMetrics { loss: 1.0 - accuracy, accuracy, epoch }
}

#[workflow]
mod trainer {
    use super::{train_one_epoch, TrainingConfig, TrainingMetrics};
    use agent::prelude::*;

    #[state]
    async fn prepare_training(ctx: &Context) -> StateResult {
        let config = TrainingConfig { model_name: "my_model".into(), batch_size: 32, epochs: 10, learning_rate: 0.001 };
        ctx.set_typed("config", config);
        ctx.set_state("epoch", 0u32);
        "train_model".into()
    }

    #[state(resources(cpu = 2.0, gpu = 1.0), retry(max = 2, initial_delay = 0.5))]
    async fn train_model(ctx: &Context) -> StateResult {
        let config = ctx.get_typed::<TrainingConfig>("config").unwrap();
        let epoch: u32 = ctx.get_state_or("epoch", 0);
        let metrics = train_one_epoch(&config, epoch).await;
        let accuracy = metrics.accuracy;
        ctx.set_typed(&format!("metrics_epoch_{epoch}"), metrics);
        ctx.set_state("epoch", epoch + 1);
        if accuracy > 0.98 || epoch + 1 >= config.epochs {
            return "evaluate_model".into(); // early stopping, or the last epoch
        }
        "train_model".into()
    }

    #[state]
    async fn evaluate_model(ctx: &Context) -> StateResult {
        let epochs: u32 = ctx.get_state_or("epoch", 0);
        let last = ctx.get_typed::<TrainingMetrics>(&format!("metrics_epoch_{}", epochs - 1)).unwrap();
        ctx.set_state("final_accuracy", last.accuracy);
        StateResult::End
    }
}

async fn run() -> Result<AgentResult, AgentError> {
    // `train_model` asks for a GPU: this pool has one (simulated), so the example runs on
    // any machine. The default pool is the machine's own, without GPUs.
    let pool = ResourcePool::builder().total_cpu(2.0).total_memory_mb(4096.0).total_gpu(1.0).build();
    trainer::agent().with_resource_pool(pool).run().await
}

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    let result = run().await?;
    let epochs: u32 = result.context().get_state_or("epoch", 0);
    let accuracy: f64 = result.context().get_state_or("final_accuracy", 0.0);
    println!("stopped after {epochs} of 10 epochs at accuracy {accuracy:.4}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test(start_paused = true)]
    async fn stops_early_once_accuracy_passes_098() {
        let result = super::run().await.unwrap();
        let ctx = result.context();
        // 1 - 0.5^(e+1) * 0.999 > 0.98 first at e = 5: six epochs.
        assert_eq!(ctx.get_state::<u32>("epoch"), Some(6));
        assert!(ctx.get_state::<f64>("final_accuracy").unwrap() > 0.98);
        let train = result.metrics().states.iter().find(|s| s.name == "train_model").unwrap().completed;
        assert_eq!(train, 6, "the training state ran once per epoch");
    }
}
