namespace Temper.Tests;

public class FixtureLocationTests
{
    [Fact]
    public void SharedFixturesAreFound() => Assert.True(Directory.Exists(Fixtures.Hf("llama-tiny")));
}
