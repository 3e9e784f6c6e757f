//! Human input: how the agent's runs ask for it and how it is answered.
//!
//! Invariants:
//! - The requests for human input of every run of the agent go to one hub, which the agent
//!   shares with its runs through their links. Request ids are counted per run, so an
//!   answer names its run: the agent's methods speak of its most recent run, a
//!   [`RunHandle`](crate::RunHandle)'s of its own.
//! - An answer the request's validator refuses changes nothing: the request stays pending.
//!   With a store, the first answer to a request wins, whichever process gives it.

use super::Agent;

impl Agent {
    /// Whether requests for human input are shown on the terminal (printed on stderr,
    /// answered by a line on stdin, asked again when the validator refuses the line). On by
    /// default only when stdin is a terminal; turned on with a piped stdin, each line of
    /// the pipe answers the next request. Answers from code ([`Agent::answer`]) and from the
    /// store are taken either way.
    pub fn input_from_terminal(self, on: bool) -> Self {
        self.shared.links.inputs.set_terminal(on);
        self
    }

    /// The requests for human input that states of the most recent run are waiting on now,
    /// in request order: exactly those [`Agent::answer`] accepts. Empty once they are
    /// answered (or defaulted, or timed out). Other runs going on at once list theirs
    /// through their [`RunHandle`](crate::RunHandle::pending_inputs).
    pub fn pending_inputs(&self) -> Vec<crate::PendingInput> {
        self.run_id().map(|run| self.shared.links.inputs.pending(Some(&run))).unwrap_or_default()
    }

    /// Answer the pending request `id` of the most recent run (see
    /// [`Agent::pending_inputs`]): the state waiting on it goes on with `value`. With a store, the answer is recorded there too (where the
    /// first answer to a request wins, should another process answer it at the same time).
    ///
    /// # Errors
    ///
    /// [`AnswerError::UnknownRequest`](crate::AnswerError::UnknownRequest) when no state waits
    /// on `id`; [`AnswerError::Rejected`](crate::AnswerError::Rejected) when the request's
    /// validator refuses `value`, in which case the request stays pending.
    ///
    /// ```
    /// use std::time::Duration;
    /// use agent_runtime::{Agent, AnswerError};
    /// use agent_core::{BoxError, Context, HumanInput, StateResult};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), agent_core::AgentError> {
    /// let mut agent = Agent::new("review").input_from_terminal(false);
    /// agent.add_state("review", |ctx: Context| async move {
    ///     let verdict = ctx
    ///         .human_in_the_loop(HumanInput::new("Approve? (yes/no)").validator(|x: &str| x == "yes" || x == "no"))
    ///         .await?;
    ///     ctx.set_state("verdict", verdict);
    ///     Ok::<_, BoxError>(StateResult::End)
    /// });
    ///
    /// // A reviewer answering from code, in another task.
    /// let reviewer = agent.clone();
    /// tokio::spawn(async move {
    ///     let request = loop {
    ///         match reviewer.pending_inputs().pop() {
    ///             Some(request) => break request,
    ///             None => tokio::time::sleep(Duration::from_millis(10)).await,
    ///         }
    ///     };
    ///     assert_eq!(request.id, "input-1");
    ///     assert!(matches!(reviewer.answer(&request.id, "maybe"), Err(AnswerError::Rejected { .. })));
    ///     reviewer.answer(&request.id, "yes").unwrap();
    ///     assert!(reviewer.pending_inputs().is_empty());
    /// });
    ///
    /// let result = agent.run().await?;
    /// assert_eq!(result.context().get_state::<String>("verdict").as_deref(), Some("yes"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn answer(&self, id: &str, value: impl Into<String>) -> Result<(), crate::AnswerError> {
        match self.run_id() {
            Some(run) => self.shared.links.inputs.answer(Some(&run), id, value.into()),
            None => Err(crate::AnswerError::UnknownRequest { id: id.to_owned() }),
        }
    }

    /// Every request for human input of the most recent run, answered or not, in
    /// request order: the prompt, when it was asked and answered, the answer, and whether
    /// it was the default taken at the timeout (`defaulted`).
    pub fn input_history(&self) -> Vec<crate::store::InputRecord> {
        self.run_id().map(|run| self.shared.links.inputs.records(&run)).unwrap_or_default()
    }
}
