Console.WriteLine("temper");
