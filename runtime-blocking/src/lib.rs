//! The blocking runtime: a thread per connection.
