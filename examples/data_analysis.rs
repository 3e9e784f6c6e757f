//! A data analysis pipeline, built with the builder because its shape is only known
//! at run time: the dataset is split into chunks, one state per chunk is added, the chunks
//! run in parallel, and `merge_results` runs once after all of them.
//!
//! Run: `cargo run --example data_analysis`

use agent::prelude::*;

/// Build the agent for `data`, split into chunks of `chunk_size`.
fn build(data: Vec<u64>, chunk_size: usize) -> Agent {
    let chunks: Vec<Vec<u64>> = data.chunks(chunk_size).map(<[u64]>::to_vec).collect();
    let names: Vec<String> = (0..chunks.len()).map(|i| format!("process_chunk_{i}")).collect();

    let mut agent = Agent::new("data_analysis");
    let targets = names.clone();
    agent.add_state("analyze_dataset", move |_ctx: Context| {
        let targets = targets.clone();
        async move {
            if targets.len() > 1 {
                StateResult::parallel(targets)
            } else {
                StateResult::next("simple_process")
            }
        }
    });
    for (i, chunk) in chunks.into_iter().enumerate() {
        agent.add_state(names[i].clone(), move |ctx: Context| {
            let chunk = chunk.clone();
            async move {
                let sum: u64 = chunk.iter().sum();
                let max = chunk.iter().copied().max().unwrap_or(0);
                ctx.set_state(&format!("results_{i}"), (sum, max));
                StateResult::next("merge_results")
            }
        });
    }
    let chunk_count = names.len();
    agent
        .add_state("merge_results", move |ctx: Context| async move {
            let mut total = 0;
            let mut max = 0;
            for i in 0..chunk_count {
                let (s, m): (u64, u64) = ctx.get_state(&format!("results_{i}")).unwrap_or((0, 0));
                total += s;
                max = max.max(m);
            }
            ctx.set_state("total", total);
            ctx.set_state("max", max);
            ctx.update_state_or_default("merges", |n: &mut u32| *n += 1).ok();
            StateResult::End
        })
        .join();
    agent.add_state("simple_process", |ctx: Context| async move {
        ctx.set_state("total", 0u64);
        StateResult::End
    });
    agent
}

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    let data: Vec<u64> = (1..=10_000).collect();
    let result = build(data, 1_000).run().await?;
    let total: u64 = result.context().get_state_or("total", 0);
    let max: u64 = result.context().get_state_or("max", 0);
    println!("10 chunks merged once: total {total}, max {max}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_made_at_run_time_merge_once() {
        let data: Vec<u64> = (1..=10_000).collect();
        let result = super::build(data, 1_000).run().await.unwrap();
        let ctx = result.context();
        assert_eq!(ctx.get_state::<u64>("total"), Some(50_005_000));
        assert_eq!(ctx.get_state::<u64>("max"), Some(10_000));
        assert_eq!(ctx.get_state::<u32>("merges"), Some(1));
    }
}
